"""The settings on the command line, checked on the parser: each command offers the settings groups it
reads and no others, every argument says what it is for, `--help-all` lists every setting, and a flag
still wins over its environment variable. (A user reported `generate --help` listing ~33 Kafka and
ClickHouse flags it never reads, and `--events`, `--seed`, `--streamers` without any help.)"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from streamproc.cli.main import build_parser
from streamproc.cli.settings_cli import COMMAND_GROUPS, effective_text, help_all_text, settings_of
from streamproc.settings import GROUPS, Settings, env_name, fields_in, flag_name, is_secret


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def group_titles(help_text: str) -> set[str]:
    """The settings groups a help text shows (argparse prints each group's title on a line of its own)."""
    return {g for g in GROUPS if f"\n{GROUPS[g]} settings:\n" in help_text}


def test_every_setting_has_a_known_group_and_help() -> None:
    for f in fields(Settings):
        assert f.metadata.get("group") in GROUPS, f.name
        assert f.metadata.get("help", "").strip(), f.name
    assert all(fields_in(g) for g in GROUPS), "a group without settings"


def test_every_command_says_which_groups_it_reads() -> None:
    assert set(COMMAND_GROUPS) == set(subcommands())
    for command, groups in COMMAND_GROUPS.items():
        assert set(groups) <= set(GROUPS), command
        assert "logging" in groups, f"{command}: main() configures logging for every command"


@pytest.mark.parametrize("command", sorted(COMMAND_GROUPS))
def test_each_command_help_lists_exactly_its_settings_groups(command: str) -> None:
    sp = subcommands()[command]
    text = sp.format_help()
    assert group_titles(text) == set(COMMAND_GROUPS[command])
    for f in fields(Settings):
        flag = flag_name(f)
        if flag is None:  # secrets never get a flag
            assert "--" + f.name.replace("_", "-") not in text
            continue
        reads = f.metadata["group"] in COMMAND_GROUPS[command]
        assert (f" {flag} " in text) == reads, (command, flag)


def test_generate_shows_kafka_and_logging_only() -> None:
    """The reported case: generate publishes to Kafka (without --out) and reads nothing of the store."""
    text = subcommands()["generate"].format_help()
    assert group_titles(text) == {"kafka", "logging"}
    assert "--clickhouse-url" not in text and "--lateness-ms" not in text and "--web-port" not in text


def test_a_flag_of_a_group_the_command_does_not_read_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["generate", "--clickhouse-url", "http://x:8123"])
    assert exit_.value.code == 2
    assert "--clickhouse-url" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMAND_GROUPS))
def test_every_argument_has_help(command: str) -> None:
    for action in subcommands()[command]._actions:
        assert action.help and action.help.strip() and action.help is not argparse.SUPPRESS, \
            (command, action.option_strings or action.dest)


def test_the_top_level_arguments_have_help() -> None:
    for action in build_parser()._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help and action.help.strip(), action.option_strings
    for name, choice in subcommands().items():
        assert choice.description, name


@pytest.mark.parametrize("argv", [["--help-all"], ["generate", "--help-all"], ["import", "--help-all"]])
def test_help_all_lists_every_setting(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.strip() == help_all_text().strip()
    for f in fields(Settings):
        assert env_name(f) in out, f.name
        assert f.metadata["help"].split()[0] in out, f.name
        if flag_name(f):
            assert f"{flag_name(f)}, {env_name(f)}  ({f.type}, default " in out, f.name
        else:
            assert f"{env_name(f)}_FILE (secret)" in out, f.name
    for title in GROUPS.values():
        assert title in out


def test_a_flag_overrides_its_environment_variable() -> None:
    env = {"STREAMPROC_LATENESS_MS": "7000", "STREAMPROC_WEB_PORT": "7070"}
    flagged = build_parser().parse_args(["worker", "--lateness-ms", "5000"])
    s = settings_of(flagged, env)
    assert s.lateness_ms == 5000  # the flag
    assert s.web_port == 7070  # no flag: the variable
    assert s.flush_interval_s == Settings.flush_interval_s  # neither: the default
    assert settings_of(build_parser().parse_args(["worker"]), env).lateness_ms == 7000


def test_flags_are_typed_like_their_settings() -> None:
    args = build_parser().parse_args(["worker", "--flush-interval-s", "0.25", "--max-buffered-rows", "10"])
    s = settings_of(args, {})
    assert s.flush_interval_s == 0.25 and s.max_buffered_rows == 10
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--max-buffered-rows", "ten"])


def test_effective_settings_mask_every_secret() -> None:
    secret_values = {f.name: f"s3cret-{f.name}" for f in fields(Settings) if is_secret(f)}
    assert secret_values, "the project has secrets"
    text = effective_text(Settings(**secret_values, lateness_ms=1234))
    assert "STREAMPROC_LATENESS_MS=1234" in text
    for name, value in secret_values.items():
        assert value not in text
        assert f"STREAMPROC_{name.upper()}=***" in text
    assert "STREAMPROC_WEB_TOKEN=''" in effective_text(Settings())  # unset: shown empty, not ***
