"""Fuzz every input kind through the real command line: nothing a file holds may hurt.

Seeded mutants (tests/support/mutate.py: byte flips, line deletions and duplications, alias bombs, deep
nesting, NUL and control bytes, NaN/inf, duplicate keys, traversal includes and pcaps, non-UTF-8
bytes, huge files, control characters in names, ...) of every shipped input file kind go through
``cyberrange.cli.main.main(argv)``:

=========== ================================================ ==========================================
kind        made from                                        command
=========== ================================================ ==========================================
topology    topologies/*.yaml, tests/data/v2/good (includes) ``topo check FILE``
playbook    attack_playbooks/*.yaml (+ pcaps/)               ``playbook check FILE --topology TOPO``
detectors   detectors/*.yaml (one file of the folder)         ``detect list --detectors DIR``
es          an Elasticsearch config file                     ``store ping --to FILE`` (network blocked)
clab        /work/shared/interop/containerlab/*.clab.yml     ``topo import FILE -o OUT``
response    responses/*.yaml                                 ``response check FILE --topology TOPO
                                                             --detectors detectors``
change      topologies/changes/*.yaml                        ``change check TOPO FILE``
=========== ================================================ ==========================================

Each mutant runs in a child forked from this (pre-imported) process: one process start costs
about a second, a fork a few milliseconds. The child's stdout and stderr go to files; its time is
measured from fork to exit, its memory as its peak RSS (``wait4`` rusage) minus that of a child
that does nothing (a forked child starts with the parent's anonymous pages). An alarm and an
address-space limit are only safety nets: the limits asserted are the measured ones.

Every mutant must exit 0, or 2 with exactly one line on stderr starting with ``error:`` (``topo
check`` may also exit 1 with one ``failed:`` line: a lint error finding is a failed check, not bad
input), within 5 s and 300 MB, with no traceback, and no output may hold a planted secret file
from outside the mutant's folder, nor a line of /etc/shadow.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT
from mutate import SECRET, SECRET_MARK, Ctx, mutate

CLAB_DIR = Path("/work/shared/interop/containerlab")
SEED = int(os.environ.get("CYBERRANGE_FUZZ_SEED", "11"))
PER_KIND = {"topology": 120, "playbook": 110, "detectors": 70, "es": 60, "clab": 60,
            "response": 60, "change": 60}
TIME_LIMIT_S = 5.0
MEMORY_LIMIT = 300 * 2**20
WORKERS = 2
HARD_TIMEOUT_S = 30          # the safety net: a child still running is killed by SIGALRM

ES_CONFIG = b"""# the Elasticsearch config of a fuzz run: nothing listens on port 9
elasticsearch:
  url: es://127.0.0.1:9?auth=none
  prefix: fuzz
  workers: 2
  chunk: 500
  chunk_mb: 1.5
  timeout: 1
  retries: 0
  page: 100
  spool: spool
"""


@dataclass
class Case:
    kind: str
    source: str
    op: str
    argv: list
    folder: Path


@dataclass
class Result:
    case: Case
    code: int
    out: str
    err: str
    seconds: float
    extra_rss: int


# -- the mutants ------------------------------------------------------------------------------

def _limit(kind: str) -> int:
    if kind == "response":
        from cyberrange.blue.response_format import LIMITS as RESPONSE
        return RESPONSE.max_bytes
    if kind == "change":
        from cyberrange.patch.changeset import LIMITS as CHANGE
        return CHANGE.max_bytes
    from cyberrange.model.yamlsrc import LIMITS
    return LIMITS[{"topology": "topology", "playbook": "playbook", "detectors": "detectors",
                   "es": "es-config", "clab": "containerlab"}[kind]].max_bytes


def _topology_files() -> dict[str, Path]:
    """topology name -> shipped file."""
    out = {}
    for f in sorted((ROOT / "topologies").glob("*.yaml")):
        for line in f.read_text().splitlines():
            if line.startswith("name:"):
                out[line.split(":", 1)[1].strip()] = f
                break
    return out


def _sources() -> dict[str, list[tuple[Path, Path]]]:
    """kind -> [(file to mutate, folder to copy it with)]."""
    v2 = ROOT / "tests" / "data" / "v2" / "good"
    out = {
        "topology": [(f, f.parent) for f in sorted((ROOT / "topologies").glob("*.yaml"))]
        + [(v2 / "full.yaml", v2), (v2 / "parts" / "hq.yaml", v2), (v2 / "sensors_benign.yaml", v2)],
        "playbook": [(f, f.parent) for f in sorted((ROOT / "attack_playbooks").glob("*.yaml"))],
        "detectors": [(f, f.parent) for f in sorted((ROOT / "detectors").glob("*.yaml"))],
        "es": [(Path("es.yaml"), Path("."))],
        "clab": [(f, f.parent) for f in sorted(CLAB_DIR.glob("*.clab.yml"))] if CLAB_DIR.is_dir()
        else [],
        "response": [(f, f.parent) for f in sorted((ROOT / "responses").glob("*.yaml"))],
        "change": [(f, f.parent) for f in sorted((ROOT / "topologies" / "changes").glob("*.yaml"))],
    }
    return out


def _prepare(kind: str, source: Path, home: Path, folder: Path, tmp: Path) -> tuple[Path, list]:
    """Lay out the mutant's folder (the source's companions copied in); return the path the
    mutant goes to and the command."""
    folder.mkdir(parents=True)
    (folder / "link-out.yaml").symlink_to(tmp / "outside" / "secret.yaml")    # a link out
    if kind == "topology":
        if home.name == "good":                       # the v2 files and their includes
            shutil.copytree(home / "parts", folder / "parts")
            shutil.copy(home / "full.yaml", folder / "full.yaml")
            shutil.copy(home / "sensors_benign.yaml", folder / "sensors_benign.yaml")
            target = folder / source.relative_to(home)
            top = folder / ("full.yaml" if source.name == "hq.yaml" else source.name)
        else:
            target = top = folder / source.name
        return target, ["topo", "check", str(top)]
    if kind == "playbook":
        shutil.copytree(home / "pcaps", folder / "pcaps", ignore=shutil.ignore_patterns("*.py"))
        target = folder / source.name
        name = next((ln.split(":", 1)[1].strip() for ln in source.read_text().splitlines()
                     if ln.startswith("topology:")), "fob")
        topo = _topology_files().get(name, ROOT / "topologies" / "fob.yaml")
        return target, ["playbook", "check", str(target), "--topology", str(topo)]
    if kind == "detectors":
        dets = folder / "detectors"
        shutil.copytree(home, dets)
        return dets / source.name, ["detect", "list", "--detectors", str(dets)]
    if kind == "es":
        return folder / "es.yaml", ["store", "ping", "--store", str(folder / "es.yaml")]
    if kind == "response":
        target = folder / source.name
        name = next((ln.split(":", 1)[1].strip() for ln in source.read_text().splitlines()
                     if ln.startswith("topology:")), "fob")
        topo = _topology_files().get(name, ROOT / "topologies" / "fob.yaml")
        return target, ["response", "check", str(target), "--topology", str(topo),
                        "--detectors", str(ROOT / "detectors")]
    if kind == "change":
        target = folder / source.name
        name = next((ln.split(":", 1)[1].strip() for ln in source.read_text().splitlines()
                     if ln.startswith("topology:")), "fob")
        topo = _topology_files().get(name, ROOT / "topologies" / "fob.yaml")
        return target, ["change", "check", str(topo), str(target)]
    target = folder / source.name
    return target, ["topo", "import", str(target), "-o", str(folder / "imported.yaml")]


def build_cases(tmp: Path) -> tuple[list[Case], dict[str, str]]:
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text(f'"{SECRET}": 1\nnodes: [{{name: "{SECRET}"}}]\n')
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    for kind, sources in _sources().items():
        if not sources:
            skipped[kind] = f"no input files in {CLAB_DIR}" if kind == "clab" else "no sources"
            continue
        ctx = Ctx(kind, _limit(kind), secret_abs=str(outside / "secret.yaml"))
        for n in range(PER_KIND[kind]):
            source, home = sources[n % len(sources)]
            data = ES_CONFIG if kind == "es" else source.read_bytes()
            m = mutate(kind, str(source), data, n, SEED, ctx)
            folder = tmp / "cases" / f"{kind}-{n:03d}"
            target, argv = _prepare(kind, source, home, folder, tmp)
            target.write_bytes(m.data)
            cases.append(Case(kind, source.name, m.op, argv, folder))
    return cases, skipped


# -- running them in forked children ------------------------------------------------------------

def _preload() -> None:
    """Import what the commands import lazily, so that no child pays for it."""
    import cyberrange.cli.main as cli_main
    cli_main._register()
    import cyberrange.attack.playbook  # noqa: F401
    import cyberrange.detect.registry  # noqa: F401
    import cyberrange.model.interop  # noqa: F401
    import cyberrange.model.lint  # noqa: F401
    import cyberrange.model.loader  # noqa: F401
    import cyberrange.store.es_store  # noqa: F401
    import elasticsearch  # noqa: F401


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _block_network() -> None:
    """In a child: no name lookups and no connections (a mutated URL must not reach out)."""
    import socket

    def refuse(*_a, **_k):
        raise ConnectionRefusedError(111, "Connection refused")

    real_getaddrinfo = socket.getaddrinfo

    def numeric_only(host, port, family=0, type=0, proto=0, flags=0):
        return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = numeric_only


def _child(case: Case, out_path: Path, err_path: Path, vm_limit: int) -> None:
    """Runs in the forked child; never returns."""
    code = 98
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(HARD_TIMEOUT_S)
        resource.setrlimit(resource.RLIMIT_AS, (vm_limit, vm_limit))
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                               (1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            new = os.open(path, mode, 0o600)
            os.dup2(new, fd)
            os.close(new)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        for key in [k for k in os.environ if k.startswith("CYBERRANGE_")]:
            del os.environ[key]
        os.environ["COLUMNS"] = "120"
        os.chdir(case.folder)
        if case.kind == "es":
            _block_network()
        from cyberrange.cli.main import main
        try:
            main(case.argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 97)
        except BaseException:                       # noqa: BLE001 - the finding we look for
            import traceback
            traceback.print_exc()
            code = 99
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _baseline_rss() -> int:
    """Peak RSS of a child that does nothing: what every child starts with."""
    best = 0
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _, _, ru = os.wait4(pid, 0)
        best = max(best, ru.ru_maxrss * 1024)
    return best


def run_cases(cases: list[Case], tmp: Path) -> list[Result]:
    _preload()
    vm_limit = _vm_size() + 2 * 2**30
    baseline = _baseline_rss()
    results: list[Result] = []
    queue = list(enumerate(cases))
    running: dict[int, tuple] = {}
    logs = tmp / "logs"
    logs.mkdir()
    while queue or running:
        while queue and len(running) < WORKERS:
            n, case = queue.pop(0)
            if n % 50 == 0:
                baseline = max(baseline, _baseline_rss()) if n else baseline
            out, err = logs / f"{n:03d}.out", logs / f"{n:03d}.err"
            sys.stdout.flush()
            sys.stderr.flush()
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(case, out, err, vm_limit)
            running[pid] = (case, t0, out, err)
        done = False
        for pid in list(running):
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if got == 0:
                continue
            seconds = time.monotonic() - running[pid][1]
            case, _t0, out, err = running.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            results.append(Result(case, code, out.read_text(errors="replace"),
                                  err.read_text(errors="replace"), seconds,
                                  ru.ru_maxrss * 1024 - baseline))
            done = True
        if not done:
            time.sleep(0.002)
    return results


# -- the verdict ------------------------------------------------------------------------------------

def _shadow_tokens() -> list[str]:
    """Password hashes of this machine's /etc/shadow (when readable): they must show nowhere."""
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return []
    return [f.split(":")[1] for f in lines if len(f.split(":")) > 1 and len(f.split(":")[1]) > 12]


def problems(r: Result, shadow: list[str]) -> list[str]:
    out = []
    err_lines = r.err.splitlines()
    if r.code == 99 or "Traceback" in r.err:
        out.append("traceback")
    if r.code < 0:
        out.append(f"killed by signal {-r.code}")
    elif r.code == 0:
        # `topo import` says in one warning line what the file holds that it did not import
        warned = (r.case.argv[:2] == ["topo", "import"] and len(err_lines) == 1
                  and r.err.startswith("warning: ") and r.err.endswith("\n"))
        if r.err.strip() and not warned:
            out.append("exit 0 with stderr")
    elif r.code == 2:
        if len(err_lines) != 1 or not r.err.startswith("error: ") or not r.err.endswith("\n"):
            out.append(f"exit 2 but stderr is not one 'error:' line ({len(err_lines)} lines)")
    elif r.code == 1 and r.case.argv[:2] == ["topo", "check"]:
        if len(err_lines) != 1 or not r.err.startswith("failed: "):
            out.append("exit 1 but stderr is not one 'failed:' line")
    else:
        out.append(f"exit code {r.code}")
    if r.seconds > TIME_LIMIT_S:
        out.append(f"took {r.seconds:.2f} s")
    if r.extra_rss > MEMORY_LIMIT:
        out.append(f"used {r.extra_rss / 2**20:.0f} MB")
    text = r.out + r.err
    if SECRET_MARK in text:
        out.append("the planted secret shows in the output")
    if any(tok in text for tok in shadow):
        out.append("a line of /etc/shadow shows in the output")
    return out


def summary(results: list[Result], seconds: float, skipped: dict[str, str]) -> str:
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_kind[r.case.kind].append(r)
    lines = [f"fuzz: {len(results)} mutants (seed {SEED}) in {seconds:.1f} s"]
    for kind, rs in by_kind.items():
        codes = Counter(r.code for r in rs)
        slow = max(rs, key=lambda r: r.seconds)
        big = max(rs, key=lambda r: r.extra_rss)
        lines.append(f"  {kind:9} {len(rs):4} mutants  exit {dict(sorted(codes.items()))}  "
                     f"max {slow.seconds:.2f} s ({slow.case.op})  "
                     f"max +{max(0, big.extra_rss) / 2**20:.0f} MB ({big.case.op})")
    slow = max(results, key=lambda r: r.seconds)
    big = max(results, key=lambda r: r.extra_rss)
    lines.append(f"  all: max {slow.seconds:.2f} s ({slow.case.kind} {slow.case.source} "
                 f"{slow.case.op}), max +{max(0, big.extra_rss) / 2**20:.0f} MB "
                 f"({big.case.kind} {big.case.source} {big.case.op})")
    ops = Counter(op for r in results for op in r.case.op.split("+"))
    lines.append("  operators: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    for kind, why in skipped.items():
        lines.append(f"  {kind}: skipped ({why})")
    return "\n".join(lines)


def test_fuzz_every_input_kind(tmp_path, capsys):
    t0 = time.monotonic()
    cases, skipped = build_cases(tmp_path)
    assert len(cases) >= 300 - (PER_KIND["clab"] if "clab" in skipped else 0)
    results = run_cases(cases, tmp_path)
    took = time.monotonic() - t0
    with capsys.disabled():
        print("\n" + summary(results, took, skipped))
    shadow = _shadow_tokens()
    bad = [(r, p) for r in results if (p := problems(r, shadow))]
    report = "\n".join(
        f"{r.case.folder.name} {r.case.source} [{r.case.op}] {'; '.join(p)}: "
        f"exit {r.code}, {r.seconds:.2f} s, +{r.extra_rss / 2**20:.0f} MB, "
        f"argv {' '.join(r.case.argv)}\n    stderr: {r.err[-600:]!r}"
        for r, p in bad[:25])
    assert not bad, f"{len(bad)} of {len(results)} mutants misbehaved:\n{report}"
    assert len(results) == len(cases)
    assert {r.case.kind for r in results} >= {"topology", "playbook", "detectors", "es",
                                              "response", "change"}
