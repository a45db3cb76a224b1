"""The package as a user gets it: a wheel built from a copy of this checkout, installed into a
fresh virtual environment outside it, and run from an empty folder — no checkout on any path.

How it stays quick (about 30 s without the drill, on CI's machine): the wheel is built without
build isolation (the project venv's setuptools, no download); the venv is made from Debian's
``/usr/bin/python3 --system-site-packages`` (its ``mininet`` module, as ``scripts/setup.sh``
does) and pip installs the dependencies from its cache (``scripts/setup.sh`` filled it when it
made ``.venv``) or its configured index, without compiling them to bytecode (``--no-compile``:
the largest part of the install's CPU time; Python compiles what it imports). The drill uses
a 3 s warm-up and a 1 s cool-down.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from helpers import PY, ROOT, needs_twin

import cyberrange

SYSTEM_PY = "/usr/bin/python3"
SOURCE = ("cyberrange", "topologies", "attack_playbooks", "detectors", "labs", "responses",
          "kibana", "pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md")


def _run(argv, *, cwd, env=None, timeout=600):
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _clean_env(venv: Path) -> dict:
    """The environment of a user who installed the wheel: no PYTHONPATH to the checkout, no
    content path of their own, the venv's bin first."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CYBERRANGE_PATH", "CYBERRANGE_INPUT_PATHS", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel, an empty working folder, install seconds)."""
    if not Path(SYSTEM_PY).exists():
        pytest.skip(f"{SYSTEM_PY} (Debian's Python, for its mininet module) is missing")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"                # a copy: the build writes build/ and *.egg-info
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "runs")
    for name in SOURCE:
        p = ROOT / name
        (shutil.copytree(p, src / name, ignore=skip) if p.is_dir()
         else shutil.copy2(p, src / name))
    r = _run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "-w", base / "dist", src], cwd=base)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (base / "dist").glob("cyberrange-*.whl")
    venv = base / "venv"
    r = _run([SYSTEM_PY, "-m", "venv", "--system-site-packages", venv], cwd=base)
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    r = _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--prefer-binary",
              "--no-compile", wheel],
             cwd=base, env=_clean_env(venv), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    work = base / "work"
    work.mkdir()
    return venv, wheel, work, time.monotonic() - t0


def _cr(installed, *args, timeout=300, env=None):
    venv, _, work, _ = installed
    return _run([venv / "bin" / "cyberrange", *args], cwd=work,
                env=env or _clean_env(venv), timeout=timeout)


def test_the_wheel_carries_content_licence_and_metadata(installed):
    _, wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for must in ("cyberrange/_content/topologies/fob.yaml",
                 "cyberrange/_content/topologies/changes/fob_open_ssh_admin.yaml",
                 "cyberrange/_content/attack_playbooks/recon_bruteforce.yaml",
                 "cyberrange/_content/detectors/portscan.yaml",
                 "cyberrange/_content/labs/arp-mitm/lab.yaml",
                 "cyberrange/_content/responses/contain-scanner.yaml",
                 "cyberrange/_content/kibana/cyberrange-dashboard.ndjson",
                 "cyberrange/model/schemas/topology.schema.json",
                 "cyberrange/services/behaviours.yaml"):
        assert must in names, must
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    assert "License: Apache-2.0" in meta
    assert "Classifier: License :: OSI Approved :: Apache Software License" in meta
    assert "Requires-Python: >=3.10" in meta


def test_installed_cli_finds_builtin_content_by_name_outside_the_checkout(installed):
    venv, _, work, seconds = installed
    print(f"pip install of the wheel into a fresh venv: {seconds:.1f} s")
    r = _run([venv / "bin" / "python", "-c", "import cyberrange; print(cyberrange.__file__)"],
             cwd=work, env=_clean_env(venv))
    assert str(venv) in r.stdout and str(ROOT) not in r.stdout, r.stdout + r.stderr
    r = _cr(installed, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cyberrange, version {cyberrange.__version__}"
    r = _cr(installed, "detect", "list")
    assert r.returncode == 0, r.stderr
    assert "_content/detectors" in r.stdout and "portscan" in r.stdout
    r = _cr(installed, "topo", "check", "fob")
    assert r.returncode == 0, r.stderr
    r = _cr(installed, "playbook", "check", "recon_bruteforce", "--topology", "fob")
    assert r.returncode == 0, r.stderr
    r = _cr(installed, "lab", "list")
    assert r.returncode == 0 and "arp-mitm" in r.stdout, r.stderr
    r = _cr(installed, "topo", "check", "fobb")
    assert r.returncode == 2 and "did you mean 'fob'" in r.stderr, r.stderr
    assert not list(work.iterdir()), "a read-only command wrote into the working folder"


def test_a_user_folder_extends_and_overrides_the_builtin_content(installed, tmp_path):
    venv, _, _, _ = installed
    mine = tmp_path / "mine"
    (mine / "topologies").mkdir(parents=True)
    text = (ROOT / "topologies" / "fob.yaml").read_text()
    (mine / "topologies" / "outpost.yaml").write_text(text)
    (mine / "detectors").mkdir()
    shutil.copy(ROOT / "detectors" / "portscan.yaml", mine / "detectors")
    env = {**_clean_env(venv), "CYBERRANGE_PATH": str(mine)}
    r = _cr(installed, "topo", "check", "outpost", "--json", env=env)
    assert r.returncode == 0, r.stderr
    r = _cr(installed, "detect", "list", env=env)             # the user's detectors/ wins
    assert r.returncode == 0 and str(mine / "detectors") in r.stdout.replace("\n", ""), r.stdout
    assert "beacon" not in r.stdout
    r = _cr(installed, "--content-path", mine, "topo", "check", "outpost")   # the option
    assert r.returncode == 0, r.stderr
    r = _cr(installed, "topo", "check", "fob", env=env)       # the built-in set still there
    assert r.returncode == 0, r.stderr


@needs_twin
@pytest.mark.twin
def test_installed_drill_runs_by_name_from_an_empty_folder(installed):
    _, _, work, _ = installed
    r = _cr(installed, "drill", "run", "fob", "recon_bruteforce", "--warmup", "3",
            "--cooldown", "1", "--runs-dir", work / "runs", "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads(r.stdout)
    steps = card["steps"]
    assert [s["outcome"] for s in steps] == ["succeeded"] * 3, steps
    (run,) = (work / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["inputs"]["topology"]["path"].endswith("/_content/topologies/fob.yaml")
