"""Analysis needs no twin: what reads captures and run folders imports nothing of ``twin/`` or
``cli/``, and ``telemetry/`` imports its own modules without a cycle (imports inside function
bodies count too: they are how cycles used to hide)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "cyberrange"
ANALYSIS = ["telemetry", "store", "score", "detect", "report", "run.py", "ingest.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every cyberrange module ``path`` imports, at module level or in a function body."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("cyberrange")}


def files(*names: str) -> list[Path]:
    out = []
    for n in names:
        p = PKG / n
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def test_analysis_imports_neither_twin_nor_cli():
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in files(*ANALYSIS) for m in imports(p)
           if m.startswith(("cyberrange.twin", "cyberrange.cli"))]
    assert not bad, bad


def test_telemetry_imports_form_no_cycle():
    mods = {module_name(p): p for p in files("telemetry")}
    graph = {m: {t for t in imports(p) if t in mods and t != m} for m, p in mods.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for t in sorted(graph[m]):
            visit(t, path + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert graph["cyberrange.telemetry.wire"] == set()      # the constants import nothing


def test_reading_captures_loads_no_twin_module():
    code = ("import sys, cyberrange.telemetry.load, cyberrange.score.reconcile, cyberrange.ingest, "
            "cyberrange.telemetry.live; "
            "print(sorted(m for m in sys.modules if m.startswith(('cyberrange.twin', "
            "'cyberrange.cli', 'mininet'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "[]"
