"""`streamproc leaderboard` and `streamproc streamers load`, run as commands on a real chDB store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard_data import Oracle, build_log

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamproc", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir filled by the real processing core (in a child: chDB is one store per process)."""
    data = tmp_path_factory.mktemp("cli")
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from leaderboard_data import build_log, process_into\n"
        "from streamproc import rollup\nfrom streamproc.settings import Settings\nfrom streamproc.sink import open_sink\n"
        f"s = Settings.from_env(env={{}}, data_dir={str(data)!r}); sink = open_sink(s); sink.apply_schema()\n"
        "process_into(sink, build_log(), s); rollup.run_once(sink); sink.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    return data


def test_leaderboard_prints_the_oracle_board_as_json_and_as_a_table(store: Path) -> None:
    log = build_log()
    oracle = Oracle(log.events, log.streamers)
    out = run("leaderboard", "--metric", "gmv", "--window", "today", "--province", "陕西", "--json",
              "--data-dir", str(store))
    assert out.returncode == 0, out.stderr
    board = json.loads(out.stdout)
    assert [(r["streamer_id"], r["score"]) for r in board["rows"]] == \
        oracle.board("gmv", *oracle.window("today"), province="陕西")

    table = run("leaderboard", "--metric", "gmv", "--window", "today", "--limit", "3", "--data-dir", str(store))
    assert table.returncode == 0, table.stderr
    top = oracle.board("gmv", *oracle.window("today"), limit=3)
    lines = table.stdout.splitlines()
    assert "today" in lines[0] and len(lines) == 2 + 3
    name = next(s.name for s in log.streamers if s.streamer_id == top[0][0])
    assert name in lines[2] and f"¥{top[0][1] // 100:,}.{top[0][1] % 100:02d}" in lines[2]

    bad = run("leaderboard", "--limit", "-3", "--data-dir", str(store))
    assert bad.returncode == 2 and "limit:" in bad.stderr


def test_streamers_load_replaces_the_dimension_from_csv_and_json(store: Path, tmp_path: Path) -> None:
    log = build_log()
    top = Oracle(log.events, log.streamers).board("gmv", *Oracle(log.events, log.streamers).window("today"), limit=1)[0][0]
    csv = tmp_path / "rooms.csv"
    csv.write_text(f"streamer_id,name,province,county,village,category\n{top},测试主播,测试省,测试县,测试村,tea\n",
                   encoding="utf-8")
    loaded = run("streamers", "load", str(csv), "--data-dir", str(store))
    assert loaded.returncode == 0, loaded.stderr
    board = json.loads(run("leaderboard", "--window", "today", "--limit", "1", "--json", "--data-dir", str(store)).stdout)
    row = board["rows"][0]
    assert (row["streamer_id"], row["name"], row["province"], row["category"]) == (top, "测试主播", "测试省", "tea")

    as_json = tmp_path / "rooms.json"
    as_json.write_text(json.dumps([{"streamer_id": top, "name": "又改名了", "province": "陕西省"}], ensure_ascii=False),
                       encoding="utf-8")
    assert run("streamers", "load", str(as_json), "--data-dir", str(store)).returncode == 0
    board = json.loads(run("leaderboard", "--window", "today", "--province", "陕西", "--json",
                           "--data-dir", str(store)).stdout)
    assert top in [r["streamer_id"] for r in board["rows"]]

    broken = tmp_path / "broken.csv"
    broken.write_text("streamer_id,name,colour\ns1,甲,red\n", encoding="utf-8")
    failed = run("streamers", "load", str(broken), "--data-dir", str(store))
    assert failed.returncode == 1 and "colour" in failed.stderr
