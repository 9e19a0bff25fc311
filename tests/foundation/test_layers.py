"""The house's arrows, read from the source (every import, module-level or in a function):

* the ground floor (``edge/`` without ``edge/app/``) imports nothing above it;
* ``edge/app/`` (the composition root) is imported by nobody but itself and the tests;
* analytics has no network library and imports neither collectors, the API nor simulators;
* simulators never import collector/ (a simulator is an independent peer);
* a function-local import of our own code is only for start-up time, in a CLI module: never to
  dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("edge", "collector", "analytics", "api", "simulators", "bench")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, in_func))
            visit(child, f)

    visit(tree, False)
    return out


def _modules(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_ground_floor_imports_nothing_above_it():
    bad = []
    for p in _modules("edge"):
        if "app" in p.relative_to(ROOT / "edge").parts[:1]:
            continue
        for mod, _ in _imports(p):
            if _top(mod) in ("collector", "analytics", "api", "simulators", "bench") or mod.startswith("edge.app"):
                bad.append(f"{p.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_composition_root_is_imported_by_nobody():
    bad = []
    for top in ("edge", "collector", "analytics", "api", "simulators"):
        for p in _modules(top):
            if p.is_relative_to(ROOT / "edge" / "app"):
                continue
            bad += [f"{p.relative_to(ROOT)} imports {m}" for m, _ in _imports(p) if m.startswith("edge.app")]
    assert not bad, "\n".join(bad)


def test_analytics_is_pure_and_simulators_are_peers():
    bad = []
    for p in _modules("analytics"):
        for mod, _ in _imports(p):
            if _top(mod) in ("collector", "api", "simulators", "httpx", "aiomqtt", "paho", "pymodbus", "socket", "requests"):
                bad.append(f"{p.relative_to(ROOT)} imports {mod}")
    for p in _modules("simulators"):
        bad += [f"{p.relative_to(ROOT)} imports {m}" for m, _ in _imports(p) if _top(m) == "collector"]
    assert not bad, "\n".join(bad)


def test_function_local_imports_only_in_cli_modules():
    """A CLI imports its verbs' code when the verb runs (``edge --help`` stays fast); nothing else
    hides an import in a function."""
    bad = []
    for top in ("edge", "collector", "analytics", "api", "simulators"):
        for p in _modules(top):
            if p.name == "cli.py" or p.name.endswith("_cli.py"):
                continue
            bad += [f"{p.relative_to(ROOT)}: {m}" for m, local in _imports(p) if local and _top(m) in OURS]
    assert not bad, "function-local imports of our own code:\n" + "\n".join(bad)
