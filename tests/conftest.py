"""Shared fixtures: every test that runs real parts gets its own ports and data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.runtime.broker import free_port
from streamproc.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for one isolated run: fresh chDB path, broker and web ports nobody else uses."""
    return Settings.from_env(
        env={},
        data_dir=str(tmp_path / "data"),
        embedded_broker_port=free_port(),
        web_port=free_port(),
        flush_interval_s=0.5,
    )
