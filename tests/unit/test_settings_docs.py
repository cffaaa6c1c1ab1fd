"""docs/SETTINGS.md is generated from streamproc/settings.py; this test fails when the two drift apart
(a setting added, removed, renamed, re-grouped, or its default or help changed without regenerating)."""

from __future__ import annotations

from dataclasses import fields

from support.helpers import ROOT

from streamproc.cli.settings_cli import markdown
from streamproc.settings import Settings, env_name, flag_name

DOC = ROOT / "docs" / "SETTINGS.md"
REGENERATE = "streamproc settings --markdown > docs/SETTINGS.md"


def test_settings_doc_is_what_the_code_generates() -> None:
    assert DOC.read_text() == markdown(), f"docs/SETTINGS.md is stale: run `{REGENERATE}`"


def test_settings_doc_has_every_setting_with_its_variable_flag_and_default() -> None:
    text = markdown()
    assert REGENERATE in text  # the file says how it is made
    for f in fields(Settings):
        row = next((line for line in text.splitlines() if line.startswith(f"| `{env_name(f)}`")), None)
        assert row, f.name
        assert (f"`{flag_name(f)}`" if flag_name(f) else "(none: secret)") in row
        assert f" {f.default} " in row or (f.default == "" and " (empty) " in row), f.name
