"""Settings on the command line: which groups each command reads, their flags, and every listing of them.

A command's ``--help`` shows only the settings groups its code reads (``generate --help`` used to list
Kafka SASL and ClickHouse flags among ~33 others, most of which it never touches); ``--help-all`` and
``streamproc settings`` show every setting. The flags, both listings and docs/SETTINGS.md are rendered
from the fields of ``Settings`` (their group, help and default), so the help, the docs and the code
cannot disagree: a test fails when docs/SETTINGS.md is not what ``streamproc settings --markdown`` prints.
"""

from __future__ import annotations

import argparse
import shlex
import textwrap
from dataclasses import Field, fields
from typing import Any, Mapping, Sequence

from streamproc.settings import (
    GROUPS,
    Settings,
    env_name,
    fields_in,
    flag_name,
    is_secret,
    type_name,
)

ALL = tuple(GROUPS)

# The settings groups each command reads: the groups its --help shows and whose flags it accepts.
# Logging is read by every command (main() configures it before the command runs). The worker and the
# demo (which runs a worker, and passes it all its settings) read everything; `settings` shows everything.
COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "worker": ALL,
    "topics": ("kafka", "topics", "logging"),
    "schema": ("store", "logging"),  # apply: the store; cluster-sql: the database name
    "generate": ("kafka", "logging"),  # Kafka only when publishing (without --out)
    "clickhouse-server": ("store", "logging"),  # DATA_DIR and the user and password it accepts
    "reconcile": ("store", "rules", "boards", "logging"),
    "demo": ALL,
    "deadletter": ("kafka", "rules", "logging"),  # redrive judges by the current rules
    "record": ("kafka", "logging"),
    "replay": ("kafka", "logging"),
    "import": ("logging",),  # judges with the default rules: its output must not depend on a deployment
    "leaderboard": ("store", "boards", "web", "logging"),  # web: a worker holding the store, and its token
    "streamers": ("store", "logging"),
    "settings": ALL,
}

_NOTE = ("A flag overrides its STREAMPROC_* variable, which overrides the default. Secrets have no flag (a "
         "command line shows in `ps` and shell history): set STREAMPROC_X, or STREAMPROC_X_FILE to a file "
         "holding it.")


def _default(f: Field[Any]) -> str:
    return "(empty)" if f.default == "" else str(f.default)


def _percent(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


def _title(group: str) -> str:
    return f"{GROUPS[group]} settings"


def _python_type(f: Field[Any]) -> type:
    return {"int": int, "float": float}.get(type_name(f), str)


def add_settings_flags(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """One argument group per settings group the command reads, a flag per setting; an unset flag is
    None, so the environment (then the default) decides (``settings_of``)."""
    for group in (g for g in GROUPS if g in groups):
        secrets = [env_name(f) for f in fields_in(group) if is_secret(f)]
        desc = ("secret, from the environment only: " + ", ".join(f"{s} or {s}_FILE" for s in secrets)
                if secrets else None)
        g = parser.add_argument_group(_title(group), _percent(desc) if desc else None)
        for f in fields_in(group):
            flag = flag_name(f)
            if flag is None:
                continue
            help_text = f"{f.metadata['help']} [{env_name(f)}; default {_default(f)}]"
            g.add_argument(flag, dest=f.name, type=_python_type(f), default=None, metavar=type_name(f).upper(),
                           help=_percent(help_text))


def settings_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The effective settings of a command: its flags over ``env`` (the process environment if None)."""
    return Settings.from_env(env, **{f.name: getattr(args, f.name, None) for f in fields(Settings)})


def commands_reading(group: str) -> list[str]:
    """The commands that read a group (``settings``, which shows every group, is not one of them)."""
    return [c for c, groups in COMMAND_GROUPS.items() if group in groups and c != "settings"]


def help_all_text(width: int = 100) -> str:
    """Every setting, grouped: flag, variable, type, default, help, and the commands that read it."""
    out = ["Every setting of every command, by group. " + _NOTE, ""]
    for group in GROUPS:
        out.append(f"{GROUPS[group]} (read by: {', '.join(commands_reading(group))})")
        for f in fields_in(group):
            names = f"{flag_name(f)}, {env_name(f)}" if flag_name(f) else f"{env_name(f)} or {env_name(f)}_FILE (secret)"
            out.append(f"  {names}  ({type_name(f)}, default {_default(f)})")
            out.extend(textwrap.wrap(f.metadata["help"], width, initial_indent=" " * 6, subsequent_indent=" " * 6))
        out.append("")
    return "\n".join(out)


class HelpAll(argparse.Action):
    """``--help-all``: print every setting (not only those of this command) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="show every setting of every command (flag, variable, default, help) and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(help_all_text())
        parser.exit()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """docs/SETTINGS.md: every setting by group, as a table, from the fields of ``Settings``."""
    out = [
        "# Settings",
        "",
        "<!-- Generated by `streamproc settings --markdown > docs/SETTINGS.md` from streamproc/settings.py: edit",
        "     the fields there and run it again. tests/unit/test_settings_docs.py fails when this file drifts. -->",
        "",
        "One typed object (`streamproc/settings.py`), read from `STREAMPROC_*` environment variables. Each",
        "setting is also a flag of the same name (`--lateness-ms` for `STREAMPROC_LATENESS_MS`) on the commands",
        "that read its group; `streamproc <command> --help` lists those groups, `streamproc --help-all` every",
        "setting, and `streamproc settings` prints the settings in effect (secrets masked).",
        "",
        _NOTE,
        "",
    ]
    for group in GROUPS:
        out += [f"## {GROUPS[group][0].upper()}{GROUPS[group][1:]}", "",
                "Read by: " + ", ".join(f"`{c}`" for c in commands_reading(group)) + ".", "",
                "| variable | flag | type | default | meaning |", "|---|---|---|---|---|"]
        for f in fields_in(group):
            variable = f"`{env_name(f)}` / `_FILE`" if is_secret(f) else f"`{env_name(f)}`"
            flag = f"`{flag_name(f)}`" if flag_name(f) else "(none: secret)"
            out.append(f"| {variable} | {flag} | {type_name(f)} | {_cell(_default(f))} | {_cell(f.metadata['help'])} |")
        out.append("")
    return "\n".join(out)


def effective_text(settings: Settings) -> str:
    """The settings in effect as ``STREAMPROC_X=value`` lines by group; a secret shows as *** when set."""
    out = []
    for group in GROUPS:
        out.append(f"# {GROUPS[group]}")
        for f in fields_in(group):
            value = getattr(settings, f.name)
            shown = ("***" if value else "''") if is_secret(f) else shlex.quote(str(value))
            out.append(f"{env_name(f)}={shown}")
        out.append("")
    return "\n".join(out)


def cmd_settings(args: argparse.Namespace) -> int:
    print(markdown() if args.markdown else effective_text(settings_of(args)), end="")
    return 0
