"""Where the data files the code reads at run time are: topic specs and ClickHouse migrations.

Their one source is the top-level ``topics/`` and ``schemas/`` directories of the checkout. The wheel
carries them inside the package as ``streamproc/_data/topics`` and ``streamproc/_data/schemas``
(``[tool.hatch.build.targets.wheel.force-include]`` in pyproject.toml), so ``pip install .`` works
without the source tree; an editable checkout has no ``_data`` and reads the top-level directories.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when the package is used from it


def data_path(relative: str) -> Path:
    """The file or directory ``relative`` (e.g. ``"topics/topics.toml"``, ``"schemas/clickhouse"``).

    The copy inside the installed package first, then the checkout's; FileNotFoundError if neither.
    """
    packaged = files(__package__).joinpath("_data", *relative.split("/"))
    tried = [str(packaged)]
    if isinstance(packaged, Path):  # pip unpacks wheels, so installed resources are plain files
        if packaged.exists():
            return packaged
    source = _SOURCE_ROOT / relative
    if source.exists():
        return source
    tried.append(str(source))
    raise FileNotFoundError(f"streamproc data file {relative!r} not found (looked in {', '.join(tried)})")
