"""The web API's contract, on a real worker (embedded broker, Faust, chDB) fed a real log.

What a client relies on: every error is JSON with its status, whoever answers it (a handler, the bearer
token, the router, or aiohttp before any route); the OpenAPI document offers exactly what the server
answers (every enum value it lists is a 200, every other a 400); an unknown streamer is a 404 on every
endpoint that names one; a rising board's newcomer is ``new`` with no rank to gain from; and every
response is counted and timed by route template in /metrics, beside the process metrics. (The aiohttp
private names that answer refused requests are checked in ``tests/unit/test_faust_compat.py``.)
"""

from __future__ import annotations

import http.client
import re
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from support.helpers import isolated_settings, started
from support.leaderboard_data import START_MS, Log, Oracle, build_log, publish_and_settle, start_worker

from streamproc.boards.params import PARAMS
from streamproc.verify.stack import Stack, WorkerProcess
from streamproc.web import errors

KNOWN = "s0000"  # has data in the log and is in the dimension
ONLY_IN_DIMENSION = "quiet-room"  # in the dimension, never a single event
TOKEN = "contract-token-7Qx"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, Log, Stack]]:
    """One worker that loaded the dimension (plus a streamer with no events) and took the whole log."""
    tmp: Path = tmp_path_factory.mktemp("contract")
    settings = isolated_settings(tmp, rollup_interval_s=0.5)
    log = build_log(span_ms=100 * 60_000)
    quiet = replace(log.streamers[0], streamer_id=ONLY_IN_DIMENSION, name="A room not yet on air")
    with Stack(settings, tmp / "logs") as stack:
        worker = start_worker(stack, tmp, [*log.streamers, quiet])
        try:
            publish_and_settle(stack, worker, log.records)
            yield worker, log, stack
        finally:
            worker.stop()


def request(worker: WorkerProcess, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            header_lines: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: (status, headers, body). ``header_lines`` may repeat a name."""
    conn = http.client.HTTPConnection(worker.settings.web_host, worker.settings.web_port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in [*(headers or {}).items(), *(header_lines or [])]:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get(worker: WorkerProcess, path: str, **kw: Any) -> tuple[int, Any]:
    status, headers, body = request(worker, path, **kw)
    assert headers.get("content-type", "").startswith("application/json"), (path, status, headers, body[:200])
    return status, orjson.loads(body)


def raw(worker: WorkerProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Bytes as they are, for a request no HTTP client would write; the server's answer parsed."""
    with socket.create_connection((worker.settings.web_host, worker.settings.web_port), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):  # the server closes the connection after refusing a request
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_error(status: int, body: Any, want: int, *words: str) -> None:
    assert status == want, (status, body)
    assert isinstance(body, dict) and body["status"] == want and isinstance(body["error"], str), body
    for w in words:
        assert w in body["error"], (w, body)
    assert "Traceback" not in body["error"] and "File \"" not in body["error"], body


def log_since(worker: WorkerProcess, offset: int) -> str:
    assert worker.log_path is not None
    return worker.log_path.read_bytes()[offset:].decode(errors="replace")


def log_size(worker: WorkerProcess) -> int:
    assert worker.log_path is not None
    return worker.log_path.stat().st_size


# -- every error is JSON with its status ------------------------------------------------------------------


def test_unknown_paths_wrong_methods_and_bad_values_are_json_errors(served) -> None:
    worker, _, _ = served
    for path in ("/api/nonexistent", "/nope", "/api/leaderboard/extra", "/api", "/api/streamer/"):
        status, body = get(worker, path)
        assert_error(status, body, 404, "not found", path)
    status, body = get(worker, "/static/no-such-file.js")
    assert_error(status, body, 404, "not found", "no-such-file.js")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, payload = request(worker, "/api/leaderboard", method=method)
        assert_error(status, orjson.loads(payload), 405, "method not allowed", method, "GET")
        assert set(headers["allow"].split(",")) >= {"GET", "HEAD"}
    status, body = get(worker, "/api/leaderboard?metric=revenue")
    assert_error(status, body, 400, "metric:")
    assert body["parameter"] == "metric"  # the existing 400 keeps its field
    status, headers, payload = request(worker, "/api/nonexistent", method="HEAD")
    assert status == 404 and headers["content-type"].startswith("application/json") and payload == b""


def test_what_aiohttp_refuses_itself_is_json_and_one_warning_line_without_a_traceback(served) -> None:
    worker, _, _ = served
    before = log_size(worker)

    status, body = get(worker, "/api/leaderboard?metric=gmv&x=" + "y" * 10_000)
    assert_error(status, body, 414, "URL too long", str(errors.MAX_URL_BYTES))
    status, body = get(worker, "/api/freshness", headers={"X-Big": "z" * 20_000})
    assert_error(status, body, 431, "header too long", str(errors.MAX_HEADER_BYTES))
    status, body = get(worker, "/api/freshness", header_lines=[(f"X-H{i}", "1") for i in range(300)])
    assert_error(status, body, 431, "too many request headers")
    status, headers, payload = raw(worker, b"GET /api/freshness HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert headers["content-type"].startswith("application/json")
    assert_error(status, orjson.loads(payload), 400, "malformed request")
    # a URL just under the limit is no refusal: it reaches the API, which names the unknown parameter
    status, body = get(worker, "/api/leaderboard?x=" + "y" * (errors.MAX_URL_BYTES - 100))
    assert_error(status, body, 400, "x:")

    text = log_since(worker, before)
    assert "Traceback" not in text and "Got more than" not in text, text[-3000:]
    refusals = [line for line in text.splitlines() if "refused" in line]
    assert len(refusals) == 4, refusals
    assert all("WARNING" in line and "ERROR" not in line for line in refusals), refusals
    assert {re.search(r"refused (\d+)", line).group(1) for line in refusals} == {"414", "431", "400"}


@pytest.fixture
def guarded(served, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A second worker on the same broker, with a bearer token (its own group, store and port)."""
    _, _, stack = served
    settings = stack.settings.replace(data_dir=str(tmp_path / "data"), web_port=isolated_settings(tmp_path).web_port,
                                      group_id="contract-guarded", web_token=TOKEN)
    worker = WorkerProcess(settings, tmp_path / "guarded.log")
    try:
        yield started(worker)
    finally:
        worker.stop()


def test_a_missing_token_is_a_json_401_on_any_path(guarded: WorkerProcess) -> None:
    for path in ("/api/freshness", "/api/nonexistent", "/metrics", "/"):
        status, body = get(guarded, path)
        assert_error(status, body, 401, "unauthorized")
    status, body = get(guarded, "/api/nonexistent", headers={"Authorization": f"Bearer {TOKEN}"})
    assert_error(status, body, 404, "not found")


# -- the OpenAPI document offers what the server answers ----------------------------------------------------


def _probe(path: str) -> str:
    return path.replace("{streamer_id}", KNOWN)


def test_every_enum_value_the_spec_offers_is_answered_and_no_other(served) -> None:
    worker, _, _ = served
    status, doc = get(worker, "/api/openapi.json")
    assert status == 200
    checked = 0
    for path, item in doc["paths"].items():
        op = item["get"]
        documented = {int(code) for code in op["responses"]}
        for p in op["parameters"]:
            enum = p["schema"].get("enum")
            if p["in"] != "query" or enum is None:
                continue
            for value in enum:
                status, body = get(worker, _probe(path) + "?" + f"{p['name']}={value}")
                assert status == 200, (path, p["name"], value, body)
                checked += 1
            # what the parameter takes elsewhere but not here, and what it never takes
            for value in [*(v for v in PARAMS[p["name"]].choices if v not in enum), "bogus"]:
                status, body = get(worker, _probe(path) + "?" + f"{p['name']}={value}")
                assert status in documented, (path, p["name"], value, status)
                assert_error(status, body, 400, p["name"] + ":")
                assert body["parameter"] == p["name"]
    assert checked >= 40, checked
    window = {path: next(p["schema"]["enum"] for p in item["get"]["parameters"] if p["name"] == "window")
              for path, item in doc["paths"].items() if any(p["name"] == "window" for p in item["get"]["parameters"])}
    assert "session" in window["/api/leaderboard"]
    for path in ("/api/rising", "/api/regions", "/api/series", "/api/streamer/{streamer_id}"):
        assert "session" not in window[path], path


def test_the_spec_documents_the_error_shape(served) -> None:
    worker, _, _ = served
    _, doc = get(worker, "/api/openapi.json")
    for path, item in doc["paths"].items():
        responses = item["get"]["responses"]
        for code in ("400", "401", "429", "500"):
            schema = responses[code]["content"]["application/json"]["schema"]
            assert set(schema["required"]) == {"error", "status"}, (path, code)


# -- an unknown streamer is a 404 wherever one is named ---------------------------------------------------


def _names_a_streamer(op: dict[str, Any]) -> bool:
    return any(p["name"] == "streamer_id" for p in op["parameters"])


def _with(path: str, sid: str) -> str:
    if "{streamer_id}" in path:
        return path.replace("{streamer_id}", sid)
    return f"{path}?streamer_id={sid}"


def test_an_unknown_streamer_is_404_on_every_endpoint_that_names_one(served) -> None:
    worker, _, _ = served
    _, doc = get(worker, "/api/openapi.json")
    naming = [path for path, item in doc["paths"].items() if _names_a_streamer(item["get"])]
    assert {"/api/streamer/{streamer_id}", "/api/series"} <= set(naming)
    for path, item in doc["paths"].items():
        assert ("404" in item["get"]["responses"]) == (path in naming), path
    for path in naming:
        status, body = get(worker, _with(path, "nope"))
        assert_error(status, body, 404, "unknown streamer", "'nope'")
        assert body["parameter"] == "streamer_id"
        for sid in (KNOWN, ONLY_IN_DIMENSION):  # data, or only a row in the dimension: known
            status, body = get(worker, _with(path, sid))
            assert status == 200, (path, sid, body)
    _, quiet = get(worker, "/api/series?streamer_id=" + ONLY_IN_DIMENSION)
    assert quiet["points"] and all(v == 0 for _, v in quiet["points"])


# -- rising: a newcomer is new, never a negative place ------------------------------------------------------


def test_rising_newcomers_have_no_previous_rank_and_come_after_the_climbers(served) -> None:
    worker, log, _ = served
    oracle = Oracle(log.events, log.streamers)
    seen_new = seen_after_new = 0
    for as_of in range(START_MS + 10 * 60_000, oracle.newest_end, 7 * 60_000):
        start, end = as_of - 5 * 60_000, as_of
        now, before = oracle.totals(start, end), oracle.totals(start - 5 * 60_000, start)
        for by in ("value", "rank"):
            status, board = get(worker, f"/api/rising?metric=gmv&window=5m&limit=100&by={by}&as_of={as_of}")
            assert status == 200, board
            rows = board["rows"]
            assert {r["streamer_id"] for r in rows} == set(now), as_of
            for r in rows:
                assert r["new"] == (r["streamer_id"] not in before), r
                if r["new"]:
                    assert r["prev_rank"] is None and r["places_gained"] is None, r
                    assert r["prev_score"] == 0 and r["growth"] == r["score"], r
                else:
                    assert r["places_gained"] == r["prev_rank"] - r["rank"], r
            if by == "value":
                assert [r["growth"] for r in rows] == sorted((r["growth"] for r in rows), reverse=True)
                continue
            group = [0 if not r["new"] and r["places_gained"] > 0 else 1 if r["new"] else 2 for r in rows]
            assert group == sorted(group), (as_of, group)
            for g in (0, 2):
                gains = [(-r["places_gained"], r["rank"]) for r, k in zip(rows, group) if k == g]
                assert gains == sorted(gains), (as_of, g)
            newcomers = [r["rank"] for r, k in zip(rows, group) if k == 1]
            assert newcomers == sorted(newcomers)
            seen_new += len(newcomers)
            seen_after_new += sum(1 for k in group if k == 2) if newcomers else 0
    assert seen_new and seen_after_new  # the sweep met newcomers, and streamers ranked after them


# -- metrics: every response, by route template ------------------------------------------------------------


_SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')  # a route template has braces of its own


def scrape(worker: WorkerProcess) -> dict[tuple[str, frozenset], float]:
    status, _, body = request(worker, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(tuple(kv.split("=", 1)) for kv in re.findall(r'\w+="[^"]*"', m.group(2)))
            out[(m.group(1), frozenset((k, v.strip('"')) for k, v in labels))] = float(m.group(3))
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[(name, frozenset())] = float(value)
    return out


def test_metrics_count_every_response_by_route_template_with_process_metrics(served) -> None:
    worker, _, _ = served
    before = scrape(worker)
    calls = [("/api/streamer/s0000", "GET"), ("/api/streamer/s0001", "GET"), ("/api/streamer/nope", "GET"),
             ("/api/streamer/s0000?window=1y", "GET"), ("/api/nonexistent-" + "q" * 40, "GET"),
             ("/api/leaderboard", "POST"), ("/static/style.css", "GET"), ("/api/leaderboard?x=" + "y" * 10_000, "GET")]
    for path, method in calls:
        request(worker, path, method=method)
    after = scrape(worker)

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    one = "/api/streamer/{streamer_id}"
    assert moved("streamproc_api_requests_total", route=one, status="200") == 2
    assert moved("streamproc_api_requests_total", route=one, status="404") == 1
    assert moved("streamproc_api_requests_total", route=one, status="400") == 1
    assert moved("streamproc_api_request_seconds_count", route=one) == 4
    assert moved("streamproc_api_request_seconds_bucket", route=one, le="+Inf") == 4
    assert moved("streamproc_api_requests_total", route="unmatched", status="404") == 1
    assert moved("streamproc_api_requests_total", route="unmatched", status="405") == 1
    assert moved("streamproc_api_requests_total", route="/static/{name}", status="200") == 1
    assert moved("streamproc_api_requests_total", route="malformed", status="414") == 1
    assert moved("streamproc_api_request_seconds_count", route="malformed") == 1
    routes = {dict(labels)["route"] for name, labels in after if name.startswith("streamproc_api_request")
              and "route" in dict(labels)}
    assert not any(r.startswith("/api/streamer/s") or "nope" in r or "qqq" in r or "?" in r for r in routes), routes
    names = {name for name, _ in after}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "python_info"):
        assert name in names, name
    assert after[("process_cpu_seconds_total", frozenset())] > 0
