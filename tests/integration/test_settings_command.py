"""The settings as a user meets them: `streamproc` run as a child process, with its environment.

A flag wins over its STREAMPROC_* variable, `streamproc settings` shows what is in effect without ever
printing a secret (from the variable or from a *_FILE), each command's --help lists only the settings
groups it reads, `schema cluster-sql` prints the checked-in cluster schema, and `leaderboard` ranks by the
conversion setting in effect.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.helpers import ROOT, assert_ok, run_cli, run_python

from streamproc.cli.settings_cli import COMMAND_GROUPS
from streamproc.settings import GROUPS
from streamproc.store.cluster import FILE

TOKEN = "tok-7f3a9c1e-never-printed"
PASSWORD = "pw-2b8d4e6f-never-printed"


def test_a_flag_overrides_its_variable_in_the_settings_in_effect() -> None:
    env = {"STREAMPROC_LATENESS_MS": "7000", "STREAMPROC_WEB_PORT": "7070"}
    out = assert_ok(run_cli("settings", "--lateness-ms", "5000", env=env)).stdout.splitlines()
    assert "STREAMPROC_LATENESS_MS=5000" in out  # the flag
    assert "STREAMPROC_WEB_PORT=7070" in out  # the variable
    assert "STREAMPROC_GROUP_ID=streamproc" in out  # the default


def test_no_listing_prints_a_secret(tmp_path: Path) -> None:
    password_file = tmp_path / "ch_password"
    password_file.write_text(PASSWORD + "\n")
    env = {"STREAMPROC_WEB_TOKEN": TOKEN, "STREAMPROC_CLICKHOUSE_PASSWORD_FILE": str(password_file)}
    runs = [run_cli("settings", env=env), run_cli("--help-all", env=env), run_cli("worker", "--help", env=env),
            run_cli("settings", "--markdown", env=env)]
    for res in runs:
        assert_ok(res)
        assert TOKEN not in res.stdout + res.stderr and PASSWORD not in res.stdout + res.stderr
    shown = runs[0].stdout.splitlines()
    assert "STREAMPROC_WEB_TOKEN=***" in shown and "STREAMPROC_CLICKHOUSE_PASSWORD=***" in shown
    assert "STREAMPROC_KAFKA_SASL_PASSWORD=''" in shown  # unset


def test_generate_help_shows_only_what_generate_reads() -> None:
    text = assert_ok(run_cli("generate", "--help")).stdout
    shown = {g for g in GROUPS if f"\n{GROUPS[g]} settings:\n" in text}
    assert shown == set(COMMAND_GROUPS["generate"]) == {"kafka", "logging"}
    assert "--events" in text and "how many events" in text and "random seed" in text


def test_cluster_sql_command_prints_the_checked_in_file() -> None:
    out = assert_ok(run_cli("schema", "cluster-sql")).stdout
    assert out == (ROOT / FILE).read_text()


def test_leaderboard_reading_the_store_applies_the_conversion_setting(tmp_path: Path) -> None:
    """Read straight from the store, the board used to rank conversion with the built-in minimum audience
    whatever STREAMPROC_CONVERSION_MIN_VIEWERS said (the API applied it; the command did not)."""
    data = tmp_path / "data"
    assert_ok(run_python("-c", (
        "from support.leaderboard_data import build_log, process_into\n"
        "from streamproc.boards import rollup\nfrom streamproc.settings import Settings\n"
        "from streamproc.store import open_sink\n"
        f"s = Settings.from_env(env={{}}, data_dir={str(data)!r}); sink = open_sink(s); sink.apply_schema()\n"
        "process_into(sink, build_log(), s); rollup.run_once(sink); sink.close()\n"),
        env={"PYTHONPATH": str(ROOT / "tests")}))
    board = ["leaderboard", "--metric", "conversion", "--window", "today", "--data-dir", str(data)]
    shown = json.loads(assert_ok(run_cli(*board, "--json")).stdout)["rows"]
    assert shown and all(r["conversion"] is not None for r in shown)
    env = {"STREAMPROC_CONVERSION_MIN_VIEWERS": "1000000"}  # more viewers than any room has
    hidden = json.loads(assert_ok(run_cli(*board, "--json", env=env)).stdout)["rows"]
    assert hidden and all(r["conversion"] is None for r in hidden)
    flagged = json.loads(assert_ok(run_cli(*board, "--json", "--conversion-min-viewers", "1", env=env)).stdout)["rows"]
    assert flagged == shown  # the flag wins over the variable
    table = assert_ok(run_cli(*board, env=env)).stdout  # the table shows what the page shows: a dash
    assert "—" in table and "%" not in table.splitlines()[-1]
