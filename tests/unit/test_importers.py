"""Imports of public clickstream formats, on small fixture files written in those formats, dirt included.

The fixtures (tests/support/fixtures/) are hand-written in the public layouts, with the dirt real dumps
carry: blank, whitespace-only and truncated lines, a torn last line without a newline, a CRLF line, bytes
that are not UTF-8, stray timestamps decades off, unknown behaviours, bad prices, a quoted field with
a comma, a header in another column order. The expected numbers below were worked out by hand from
the fixture lines, not by running the importer. The same files through the whole pipeline:
tests/integration/test_importers_demo.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from support.helpers import FIXTURES, decode_record

from streamproc.ingest import events
from streamproc.logs.importers import ImportFailed, import_file
from streamproc.logs.importers import core as import_core
from streamproc.logs.importers.taobao import price_fen
from streamproc.logs.logfile import LogRecord, read_log


def decoded(log: Path) -> list[tuple[LogRecord, events.Event]]:
    """Every record of an imported log with its event; each must pass the pipeline's own validation."""
    out = []
    for rec in read_log(log):
        ev = decode_record(rec)
        assert not isinstance(ev, events.Rejection), (rec, ev)
        assert rec.key == ev.streamer_id.encode() and rec.ts == ev.ts
        out.append((rec, ev))
    assert all(a.ts <= b.ts for (a, _), (b, _) in zip(out, out[1:])), "an imported log is in event-time order"
    return out


def without_event_ids(log: Path) -> list[tuple]:
    """The log minus event ids, which name the input line (a header moves every line by one)."""
    return [(r.topic, r.key, r.ts, {k: v for k, v in orjson.loads(r.value).items() if k != "event_id"})
            for r in read_log(log)]  # fmt: skip


def visits_are_balanced(evs: list[events.Event]) -> None:
    """Per (viewer, room): enter, leave, enter, leave ... and every visit is closed."""
    state: dict[tuple[str, str], bool] = defaultdict(bool)
    for ev in evs:
        if isinstance(ev, events.View):
            key = (ev.viewer_id, ev.streamer_id)
            enter = ev.action == "enter"
            assert state[key] != enter, f"{key}: {ev.action} twice in a row"
            state[key] = enter
    assert not any(state.values()), "every visit ends with a leave"


def test_taobao_userbehavior_with_dirty_lines(tmp_path: Path) -> None:
    out, rejects = tmp_path / "tb.jsonl.zst", tmp_path / "rejects.jsonl"
    s = import_file("taobao-userbehavior", FIXTURES / "taobao_userbehavior.csv", out, rejects=rejects,
                    streamers_out=tmp_path / "rooms.jsonl")  # fmt: skip
    assert s["lines"] == 34 and s["header"] is False and s["blank"] == 2
    assert s["rejected_lines"] == {
        "ts_out_of_range": [22],  # a timestamp cut short: 1970
        "truncated": [23, 34],  # fields missing; the torn last line
        "outside_time_window": [24, 25],  # September 2017 and 2038: outside the dataset's nine days
        "unknown_behavior": [26],
        "bad_timestamp": [27],
        "missing_value": [29],
        "too_many_fields": [31],
        "invalid_utf8": [33],
    }
    assert s["rejected"] == 10
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [22, 23, 24, 25, 26, 27, 29, 31, 33, 34]
    # 14 pv rows: 13 visits (user 115's second pv a minute later is the same visit), 13 leaves
    assert s["by_event"] == {"view_enter": 13, "view_leave": 13, "like": 3, "order_paid": 5}
    assert s["folded_views"] == 1 and s["events"] == 34

    got = decoded(out)
    evs = [ev for _, ev in got]
    visits_are_balanced(evs)
    orders = [ev for ev in evs if isinstance(ev, events.Order)]
    assert sorted((o.viewer_id, o.product_id) for o in orders) == sorted(
        [("100", "2971043"), ("100", "4182583"), ("100", "4182583"), ("115", "3437066"), ("117", "2971043")])
    for o in orders:
        assert o.status == "paid" and o.quantity == 1 and o.amount_fen == price_fen(o.product_id)
        assert 990 <= o.amount_fen <= 29_990 and o.amount_fen % 100 == 90
        assert o.streamer_id == f"cat-{o.category}"
    # the duplicated buy row (lines 16 and 17) is one order id, so the pipeline counts it once
    assert len({o.order_id for o in orders}) == 4
    assert price_fen("2971043") == price_fen("2971043") and len({price_fen(str(i)) for i in range(200)}) > 50
    # user 115 leaves room 1194311 ten idle minutes after the last view (line 19)
    leave = next(ev for ev in evs if isinstance(ev, events.View) and ev.viewer_id == "115" and ev.action == "leave")
    assert leave.ts == (1511694760 + 600) * 1000
    rooms = [orjson.loads(line) for line in (tmp_path / "rooms.jsonl").read_bytes().splitlines()]
    assert {r["streamer_id"] for r in rooms} == {ev.streamer_id for ev in evs}
    assert all(r["streamer_id"] == "cat-" + r["category"] and r["platform"] == "taobao" for r in rooms)


def test_taobao_header_in_another_column_order_reads_the_same(tmp_path: Path) -> None:
    headerless = tmp_path / "first13.csv"
    headerless.write_bytes(b"\n".join((FIXTURES / "taobao_userbehavior.csv").read_bytes().split(b"\n")[:13]) + b"\n")
    a = import_file("taobao-userbehavior", headerless, tmp_path / "a.jsonl")
    b = import_file("taobao-userbehavior", FIXTURES / "taobao_userbehavior_header.csv", tmp_path / "b.jsonl")
    assert b["header"] and not a["header"] and a["rejected"] == b["rejected"] == 0
    assert without_event_ids(tmp_path / "a.jsonl") == without_event_ids(tmp_path / "b.jsonl")
    assert a["events"] == 23  # 10 pv -> 10 enters + 10 leaves, fav and cart likes, one buy


def test_rees46_with_prices_sessions_and_dirty_lines(tmp_path: Path) -> None:
    out = tmp_path / "r46.jsonl.gz"
    s = import_file("rees46", FIXTURES / "rees46_events.csv", out)
    assert s["header"] and s["blank"] == 1 and s["lines"] == 24
    assert s["rejected_lines"] == {"bad_price": [14, 15], "ts_out_of_range": [18], "bad_timestamp": [19],
                                   "truncated": [20], "unknown_event_type": [21]}  # fmt: skip
    assert s["unmapped"] == {"remove_from_cart": 1}
    assert s["by_event"] == {"view_enter": 8, "view_leave": 8, "like": 1, "order_paid": 4}
    assert s["folded_views"] == 2  # line 9 (same session and room) and line 24 (out of file order, same visit)

    evs = [ev for _, ev in decoded(out)]
    visits_are_balanced(evs)
    orders = [ev for ev in evs if isinstance(ev, events.Order)]
    # prices x 100, half up: 1081.98, 908.62 (brand "pulser, inc" quoted), 29.51, 1081.985
    assert sorted(o.amount_fen for o in orders) == [2951, 90862, 108198, 108199]
    assert sum(o.amount_fen for o in orders) == 310_210
    assert {o.category for o in orders} == {"electronics.smartphone", "computers.desktop", "2053013553375346967"}
    no_session = next(o for o in orders if o.amount_fen == 2951)
    assert no_session.session_id == "r46-512742880"
    # line 16 moves viewer 512742880 to another room: the leave of the first room is at that moment
    moved = [ev for ev in evs if isinstance(ev, events.View) and ev.viewer_id == "512742880"]
    assert [(ev.action, ev.ts) for ev in moved][:3] == [
        ("enter", 1569888010000), ("leave", 1569888014000), ("enter", 1569888014000)]


def test_generic_jsonl_by_a_field_map(tmp_path: Path) -> None:
    out = tmp_path / "shop.jsonl"
    s = import_file("generic", FIXTURES / "generic_clicks.jsonl", out, field_map=FIXTURES / "generic_clicks.toml")
    assert s["rejected_lines"] == {"unknown_behavior": [9], "missing_value": [10], "bad_amount": [11],
                                   "bad_quantity": [12], "not_object": [13], "malformed_json": [14],
                                   "bad_timestamp": [16]}  # fmt: skip
    assert s["unmapped"] == {"share": 1} and s["blank"] == 1
    evs = [ev for _, ev in decoded(out)]
    visits_are_balanced(evs)
    orders = [(o.order_id, o.status, o.quantity, o.amount_fen) for o in evs if isinstance(o, events.Order)]
    assert orders == [("A-1001", "paid", 2, 3990), ("A-1002", "paid", 1, 1990), ("A-1001", "refunded", 2, 3990)]
    assert evs[0].ts == 1781784000000  # 2026-06-18T20:00:00+08:00


def test_generic_csv_header_detection_columns_and_map_errors(tmp_path: Path) -> None:
    fmap = tmp_path / "map.toml"
    fmap.write_text('input = "csv"\n[fields]\nts = "T"\nviewer_id = "user"\nstreamer_id = "room"\nbehavior = "what"\n'
                    'product_id = "sku"\namount = "yuan"\n[time]\nunit = "s"\n[behaviors]\nlook = "view"\nbuy = "order"\n')
    with_header = tmp_path / "h.csv"
    with_header.write_text("yuan,what,room,user,T,sku\n,look,r1,u1,1781784000,\n19.9,buy,r1,u1,1781784005,p1\n")
    s = import_file("generic", with_header, tmp_path / "h.jsonl", field_map=fmap)
    assert s["header"] and s["rejected"] == 0 and s["by_event"]["order_paid"] == 1
    assert [ev.amount_fen for _, ev in decoded(tmp_path / "h.jsonl") if isinstance(ev, events.Order)] == [1990]

    fmap.write_text(fmap.read_text().replace('input = "csv"', 'input = "csv"\nheader = false\n'
                                             'columns = ["T", "user", "room", "what", "sku", "yuan"]'))
    bare = tmp_path / "bare.csv"
    bare.write_text("1781784000,u1,r1,look,,\n1781784005,u1,r1,buy,p1,19.9\n")
    import_file("generic", bare, tmp_path / "bare.jsonl", field_map=fmap)
    assert without_event_ids(tmp_path / "bare.jsonl") == without_event_ids(tmp_path / "h.jsonl")

    fmap.write_text('input = "csv"\n[fields]\nts = "T"\nviewer_id = "user"\n[behaviors]\nlook = "view"\n')
    with pytest.raises(ImportFailed, match="streamer_id, behavior"):
        import_file("generic", bare, tmp_path / "x.jsonl", field_map=fmap)
    fmap.write_text('[fields]\nts = "T"\nviewer_id = "u"\nstreamer_id = "r"\nbehavior = "b"\n[behaviors]\nbuy = "order"\n')
    with pytest.raises(ImportFailed, match="product_id"):
        import_file("generic", bare, tmp_path / "x.jsonl", field_map=fmap)
    assert not (tmp_path / "x.jsonl").exists()


def test_strict_stops_at_the_first_rejected_line_and_leaves_no_log(tmp_path: Path) -> None:
    out = tmp_path / "tb.jsonl"
    with pytest.raises(ImportFailed, match=r"line 22: ts_out_of_range"):
        import_file("taobao-userbehavior", FIXTURES / "taobao_userbehavior.csv", out, strict=True)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sorting_through_disk_runs_gives_the_same_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Taobao file is grouped by user, not by time: sorting must not depend on fitting in memory."""
    import_file("taobao-userbehavior", FIXTURES / "taobao_userbehavior.csv", tmp_path / "memory.jsonl")
    monkeypatch.setattr(import_core, "SORT_CHUNK", 4)
    import_file("taobao-userbehavior", FIXTURES / "taobao_userbehavior.csv", tmp_path / "runs.jsonl")
    assert (tmp_path / "runs.jsonl").read_bytes() == (tmp_path / "memory.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.jsonl", "runs.jsonl"]  # runs cleaned up
