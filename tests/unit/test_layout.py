"""The layout is the data path (docs/ARCHITECTURE.md, "The house"), and it stays so.

Every import of a ``streamproc`` module, at any depth of the file (a function-level import counts too),
is read from the source with ``ast``: each folder may import only the folders listed for it below, the
runtime never reaches the verification harness, and no module imports itself through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.helpers import ROOT

PACKAGE = ROOT / "streamproc"
SHARED = {"settings", "metrics", "resources", "logging_setup", "__init__"}  # the root's modules, used by all
# folder -> the folders it may import (besides SHARED and itself); the order of the data path, with the
# worker (runtime) registering the boards' timers and the web pages it serves
ALLOWED = {
    "ingest": set(),
    "core": {"ingest"},
    "store": {"core"},
    "boards": {"core", "ingest", "store"},
    "web": {"boards", "store"},
    "runtime": {"core", "ingest", "store", "boards", "web"},
    "logs": {"ingest", "runtime", "boards"},
    "sim": {"ingest", "logs", "boards"},
    "verify": {"ingest", "core", "runtime", "store", "boards", "web", "logs", "sim"},
    "cli": {"ingest", "core", "runtime", "store", "boards", "web", "logs", "sim", "verify"},
    "__main__": {"cli"},
}
ROOT_ALLOWED = {"metrics": {"core", "ingest"}}  # what a shared root module may import beyond the others


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The streamproc modules ``path`` imports, resolved to module names (relative imports included)."""
    here = module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("streamproc")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("streamproc"):
                for a in node.names:  # "from streamproc.boards import queries" names a module
                    sub = f"{base}.{a.name}"
                    out.add(sub if _exists(sub) else base)
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py") if "_data" not in p.parts]
    return {module_of(p): {m for m in imports_of(p) if _exists(m)} for p in files}


def test_each_folder_imports_only_the_folders_before_it() -> None:
    g = graph()
    assert len(g) > 60 and all(wing(m) in ALLOWED or wing(m) in SHARED for m in g), sorted(g)
    wrong = []
    for mod, deps in g.items():
        src = wing(mod)
        allowed = ALLOWED.get(src, ROOT_ALLOWED.get(src, set())) | SHARED | {src}
        wrong += [f"{mod} -> {d}" for d in sorted(deps) if wing(d) not in allowed]
    assert not wrong, wrong


def test_no_module_imports_itself_through_others() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w == v or w.startswith(v + "."):  # a package's own modules are not a circle
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                circles.append(sorted(scc))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_check_sees_a_forbidden_import() -> None:
    # the reader itself: a runtime module that imported the harness would be named
    probe = PACKAGE / "runtime" / "worker.py"
    assert "streamproc.web.server" in imports_of(probe) and "streamproc.boards.rollup" in imports_of(probe)
    assert not any(wing(m) == "verify" for m in imports_of(probe))
