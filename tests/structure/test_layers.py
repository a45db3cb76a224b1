"""The package's shape, checked: packages in layers (each imports only lower ones), no import
cycle between any two files, analysis that needs no twin, no module over 600 lines, no
function over 100 lines without a reason in its docstring. Imports inside function bodies
count too: they are how cycles used to hide. No root needed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PKG = ROOT / "cyberrange"
ANALYSIS = ["telemetry", "store", "score", "detect", "report", "run.py", "run_checks.py",
            "ingest"]

# Lowest first: a package (or top-level module) may import its own modules and those of the
# layers below it, never of its own layer or above. docs/architecture.md shows the same order.
LAYERS = [
    {"errors", "discover", "ui", "ecs"},              # plain helpers (ecs: ATT&CK id rules)
    {"shapes", "content"},                            # JSON field checks; where content is
    {"services"},                                     # the service types (model and twin read them)
    {"model"},                                        # topology format, loading, static analysis
    {"traffic", "telemetry", "attack"},               # benign plans; pcap -> records; playbooks
    {"store", "detect", "twin"},                      # records -> stores; detectors; the twin
    {"run_checks"},
    {"run"},                                          # a run folder
    {"score", "report", "ingest", "session"},         # ground truth meets alerts; captures -> store
    {"blue"},                                         # defender actions on a live twin
    {"drill"},                                        # a whole drill
    {"patch", "labs"},                                # change sets rehearsed on twins; labs
    {"cli"},                                          # commands
]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100
LONG_REASON = "Long because"     # a docstring that says why a function must stay longer


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


def test_telemetrys_wire_constants_import_nothing():
    """The bottom of telemetry/ (its import graph is checked for cycles with every other file's
    below): the wire constants that used to make pcap <-> app <-> flows import each other."""
    assert _graph()["cyberrange.telemetry.wire"] == set()


def test_reading_captures_loads_no_twin_module():
    code = ("import sys, cyberrange.ingest.load, cyberrange.score.reconcile, cyberrange.ingest, "
            "cyberrange.ingest.live; "
            "print(sorted(m for m in sys.modules if m.startswith(('cyberrange.twin', "
            "'cyberrange.cli', 'mininet'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    assert out == "[]"


def _unit(module: str) -> str:
    """The package (or top-level module) a module belongs to: ``cyberrange.twin.build`` ->
    ``twin``, ``cyberrange.drill`` -> ``drill``; the package's own ``__init__`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None
    return {m: {t for t in map(known, imports(p)) if t and t != m} for m, p in mods.items()}


def test_every_package_imports_only_lower_layers():
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    graph = _graph()
    units = {_unit(m) for m in graph} - {""}
    assert units <= set(layer), f"packages without a layer: {sorted(units - set(layer))}"
    bad = []
    for m, targets in graph.items():
        for t in targets:
            a, b = _unit(m), _unit(t)
            if a and b and a != b and layer[b] >= layer[a]:
                bad.append(f"{m} (layer {layer[a]}) imports {t} (layer {layer[b]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle_between_any_two_files():
    graph = _graph()
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


def test_no_module_over_600_lines_and_no_long_function_without_a_reason():
    big, long = [], []
    for p in sorted(PKG.rglob("*.py")):
        text = p.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{p.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not big and not long, big + long
