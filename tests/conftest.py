"""Shared fixtures for tests/unit and tests/integration, and the ``integration`` mark of the second.

tests/unit: pure and fast (`pytest -m "not integration"`, `make test-unit`); tests/integration: everything
that runs real parts (broker, worker processes, chDB under a worker, Chromium, Prometheus, child processes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.helpers import isolated_settings

from streamproc.settings import Settings

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ is marked ``integration``, whoever wrote it."""
    for item in items:
        if INTEGRATION in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for one isolated run: fresh chDB path, broker and web ports nobody else uses."""
    return isolated_settings(tmp_path)
