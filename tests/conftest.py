"""Shared fixtures for tests/unit and tests/integration, and the ``integration`` mark of the second.

tests/unit: pure and fast (`pytest -m "not integration"`, `make test-unit`); tests/integration: everything
that runs real parts (broker, worker processes, chDB under a worker, Chromium, Prometheus, child processes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

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


@pytest.fixture(scope="module")
def chdb_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One chDB session for a module. chDB holds one data path per process: if another test module
    still has one open, share it (the modules that use this keep to uniquely named databases, or only
    parse)."""
    import chdb

    try:
        c = chdb.connect(str(tmp_path_factory.mktemp("chdb")))
    except Exception as exc:  # "EmbeddedServer already initialized with path '...'"
        m = re.search(r"initialized with path '([^']*)'", str(exc))
        if not m:
            raise
        c = chdb.connect(m.group(1))
    yield c
    c.close()
