"""The package as a user gets it: a wheel, installed non-editable in a fresh virtualenv, runs the demo.

The wheel is built from this checkout and installed, alone, into a virtualenv of its own; its
dependencies are the suite's own (the pinned ones of constraints.txt), lent to that virtualenv as a plain
path entry, which is not a site directory: the checkout's editable install is not seen there, and
``pip check`` proves the wheel's declared requirements are met by what it runs on. The demo then runs from
that virtualenv in a directory outside the checkout, with no PYTHONPATH: the topic specs and the
ClickHouse migrations can only come from inside the installed package (issue 12). About 20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from support.helpers import ROOT, assert_exact, summary_of

from streamproc.runtime.broker import free_port

# The top-level directories that ship inside the wheel as streamproc/_data/<dir> (pyproject.toml).
DATA_DIRS = ("topics", "schemas")


def _run(cmd: list[str | Path], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_installed_non_editable_runs_the_demo(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, ROOT], timeout=300)
    [wheel] = wheels.glob("streamproc-*.whl")

    # The topic specs and migrations are inside, byte for byte the checkout's (their one source).
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        sources = [p for d in DATA_DIRS for p in sorted((ROOT / d).rglob("*")) if p.is_file()]
        assert any(p.suffix == ".sql" for p in sources) and (ROOT / "topics/topics.toml") in sources
        for path in sources:
            inside = f"streamproc/_data/{path.relative_to(ROOT).as_posix()}"
            assert inside in names, inside
            assert z.read(inside) == path.read_bytes(), inside
        assert "streamproc/web/static/index.html" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=120)
    py, exe = venv / "bin" / "python", venv / "bin" / "streamproc"
    [site_dir] = (venv / "lib").glob("python3*/site-packages")
    # the suite's dependencies as a plain path (its .pth files, the editable checkout among them, are not read)
    (site_dir / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], timeout=120)
    _run([py, "-m", "pip", "check"], timeout=120)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMPROC_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               STREAMPROC_EMBEDDED_BROKER_PORT=str(free_port()), STREAMPROC_WEB_PORT=str(free_port()),
               STREAMPROC_DATA_DIR=str(work / "data"))

    # The installed package, not the checkout, and its data from inside it.
    where = _run([py, "-c", "import json, streamproc, streamproc.resources as r; print(json.dumps("
                  "[streamproc.__file__, str(r.data_path('topics/topics.toml')), str(r.data_path('schemas/clickhouse'))]))"],
                 timeout=60, cwd=work, env=env)
    site = venv.resolve()
    for path in json.loads(where.stdout):
        assert Path(path).resolve().is_relative_to(site), path
        assert not Path(path).resolve().is_relative_to(ROOT), path

    demo = _run([exe, "demo", "--events", "2000", "--until-done"], timeout=300, cwd=work, env=env)
    last = assert_exact(summary_of(demo), "boards_match")
    assert last["events"] == 2000, last
