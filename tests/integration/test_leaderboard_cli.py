"""`streamproc leaderboard` and `streamproc streamers load`, run as commands on a real chDB store, on a
store a running worker holds (found through the store's lock file), and on no store at all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.helpers import ROOT, TESTS, assert_ok, isolated_settings, run_cli, run_python
from support.leaderboard_data import Oracle, build_log, get_json, settled_worker

from streamproc.runtime.broker import free_port


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir filled by the real processing core (in a child: chDB is one store per process)."""
    data = tmp_path_factory.mktemp("cli")
    code = (
        "from support.leaderboard_data import build_log, process_into\n"
        "from streamproc.boards import rollup\nfrom streamproc.settings import Settings\n"
        "from streamproc.store import open_sink\n"
        f"s = Settings.from_env(env={{}}, data_dir={str(data)!r}); sink = open_sink(s); sink.apply_schema()\n"
        "process_into(sink, build_log(), s); rollup.run_once(sink); sink.close()\n"
    )
    assert_ok(run_python("-c", code, env={"PYTHONPATH": str(TESTS)}, timeout=300))
    return data


def test_leaderboard_prints_the_oracle_board_as_json_and_as_a_table(store: Path) -> None:
    log = build_log()
    oracle = Oracle(log.events, log.streamers)
    out = run_cli("leaderboard", "--metric", "gmv", "--window", "today", "--province", "陕西", "--json",
              "--data-dir", str(store))
    assert out.returncode == 0, out.stderr
    board = json.loads(out.stdout)
    assert [(r["streamer_id"], r["score"]) for r in board["rows"]] == \
        oracle.board("gmv", *oracle.window("today"), province="陕西")

    table = run_cli("leaderboard", "--metric", "gmv", "--window", "today", "--limit", "3", "--data-dir", str(store))
    assert table.returncode == 0, table.stderr
    top = oracle.board("gmv", *oracle.window("today"), limit=3)
    lines = table.stdout.splitlines()
    assert "today" in lines[0] and len(lines) == 2 + 3
    name = next(s.name for s in log.streamers if s.streamer_id == top[0][0])
    assert name in lines[2] and f"¥{top[0][1] // 100:,}.{top[0][1] % 100:02d}" in lines[2]

    bad = run_cli("leaderboard", "--limit", "-3", "--data-dir", str(store))
    assert bad.returncode == 2 and "limit:" in bad.stderr


def test_streamers_load_replaces_the_dimension_from_csv_and_json(store: Path, tmp_path: Path) -> None:
    log = build_log()
    top = Oracle(log.events, log.streamers).board("gmv", *Oracle(log.events, log.streamers).window("today"), limit=1)[0][0]
    csv = tmp_path / "rooms.csv"
    csv.write_text(f"streamer_id,name,province,county,village,category\n{top},测试主播,测试省,测试县,测试村,tea\n",
                   encoding="utf-8")
    loaded = run_cli("streamers", "load", str(csv), "--data-dir", str(store))
    assert loaded.returncode == 0, loaded.stderr
    board = json.loads(run_cli("leaderboard", "--window", "today", "--limit", "1", "--json",
                               "--data-dir", str(store)).stdout)
    row = board["rows"][0]
    assert (row["streamer_id"], row["name"], row["province"], row["category"]) == (top, "测试主播", "测试省", "tea")

    as_json = tmp_path / "rooms.json"
    as_json.write_text(json.dumps([{"streamer_id": top, "name": "又改名了", "province": "陕西省"}], ensure_ascii=False),
                       encoding="utf-8")
    assert run_cli("streamers", "load", str(as_json), "--data-dir", str(store)).returncode == 0
    board = json.loads(run_cli("leaderboard", "--window", "today", "--province", "陕西", "--json",
                           "--data-dir", str(store)).stdout)
    assert top in [r["streamer_id"] for r in board["rows"]]

    broken = tmp_path / "broken.csv"
    broken.write_text("streamer_id,name,colour\ns1,甲,red\n", encoding="utf-8")
    failed = run_cli("streamers", "load", str(broken), "--data-dir", str(store))
    assert failed.returncode == 1 and "colour" in failed.stderr


def assert_one_line(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_leaderboard_asks_the_worker_that_holds_the_store(tmp_path: Path) -> None:
    """The CLI is given only the data dir: the worker's web port (not the default) comes from the lock file."""
    settings = isolated_settings(tmp_path, rollup_interval_s=0.5)
    log = build_log(rate_per_s=1.0)
    with settled_worker(settings, tmp_path, log) as (_, worker):
        for flags, path, query in [
            (["--window", "today", "--limit", "20"], "/api/leaderboard", {"window": "today", "limit": 20}),
            (["--metric", "views", "--window", "1h", "--group-by", "county"], "/api/regions",
             {"metric": "views", "window": "1h", "level": "county"}),
        ]:
            out = run_cli("leaderboard", *flags, "--json", "--data-dir", settings.data_dir)
            assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
            status, answer = get_json(worker.url + path + "?" + urllib.parse.urlencode(query))
            assert status == 200 and answer["rows"]
            assert json.loads(out.stdout) == answer

        rooms = tmp_path / "rooms.csv"
        rooms.write_text("streamer_id,name\ns0001,甲\n", encoding="utf-8")
        refused = run_cli("streamers", "load", str(rooms), "--data-dir", settings.data_dir)
        assert_one_line(refused)
        assert f"process {worker.proc.pid}" in refused.stderr and "STREAMPROC_STREAMERS_FILE" in refused.stderr


@contextlib.contextmanager
def holding(data_dir: Path, info: dict[str, Any] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A process that opens the embedded store under ``data_dir`` (publishing ``info``, as a worker
    publishes its web address) and keeps it until it is killed."""
    code = (
        "import sys\nfrom streamproc.store.chdb import ChdbSink\n"
        f"sink = ChdbSink({str(data_dir / 'clickhouse')!r})\n"
        + (f"sink.announce({info!r})\n" if info else "")
        + "print('holding', flush=True)\nsys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_held_store_whose_worker_does_not_answer_is_one_line(tmp_path: Path) -> None:
    published, configured = free_port(), free_port()  # nothing listens on either
    with holding(tmp_path, {"web": f"http://127.0.0.1:{published}"}) as proc:
        out = run_cli("leaderboard", "--data-dir", str(tmp_path))
    assert_one_line(out)
    assert f"process {proc.pid}" in out.stderr and f"http://127.0.0.1:{published}" in out.stderr

    with holding(tmp_path) as proc:  # no address published: the settings' web address is asked
        out = run_cli("leaderboard", "--data-dir", str(tmp_path), "--web-port", str(configured))
    assert_one_line(out)
    assert f"process {proc.pid}" in out.stderr and f":{configured}" in out.stderr


def test_no_data_is_said_and_reading_creates_no_store(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    out = run_cli("leaderboard", "--data-dir", str(missing))
    assert_one_line(out)
    assert f"no data in {missing / 'clickhouse'}" in out.stderr and not missing.exists()

    empty = tmp_path / "empty"
    (empty / "clickhouse").mkdir(parents=True)
    out = run_cli("leaderboard", "--window", "today", "--data-dir", str(empty))
    assert_one_line(out)
    assert "no data in" in out.stderr
    assert not list((empty / "clickhouse").rglob("streamproc*")), "the read created the database"

    assert run_cli("schema", "apply", "--data-dir", str(empty)).returncode == 0  # tables, but no tallies yet
    out = run_cli("leaderboard", "--data-dir", str(empty))
    assert_one_line(out)
    assert "no data in" in out.stderr


def try_open(data_dir: Path) -> str:
    """Open the store in another process: ``busy <pid>`` (StoreBusy, chDB untouched) or ``opened``."""
    code = (
        "from streamproc.store.chdb import ChdbSink\nfrom streamproc.store.lock import StoreBusy\n"
        f"try:\n    ChdbSink({str(data_dir / 'clickhouse')!r}).close()\n"
        "except StoreBusy as exc:\n    print('busy', exc.holder['pid'])\nelse:\n    print('opened')\n"
    )
    return assert_ok(run_python("-c", code, timeout=120)).stdout.strip()


def test_the_store_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    with holding(tmp_path) as proc:
        assert try_open(tmp_path) == f"busy {proc.pid}"
        os.kill(proc.pid, signal.SIGKILL)  # no close, no goodbye: the kernel drops the lock
        proc.wait()
        assert try_open(tmp_path) == "opened"
