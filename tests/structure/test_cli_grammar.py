"""One CLI grammar (issue 18, item 2), checked over click's whole command tree: every verb has
``--json`` as a flag, an error under ``--json`` is one JSON object on stdout with the exit code
unchanged, old spellings still work with one deprecation line, and content is found by name
from any folder. No root needed: nothing here builds a twin."""
from __future__ import annotations

import json
import os

import click
import pytest
from helpers import ROOT, cli

from cyberrange.cli import main as cli_main

# verbs whose output is not the tool's to shape: --json would mean nothing
EXEMPT = {
    "exec": "prints the node command's own output and exits with its code",
    "lab shell": "an interactive shell in a node",
    "up": "keeps a twin in the foreground until Ctrl-C (its --detach prints the prefix)",
}
# verbs that do not have --json yet (docs/cli.md, "Not yet"): this list may only shrink
TODO: set[str] = set()


def _leaves(cmd=None, path=()):
    cmd = cmd or cli_main.cli
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _leaves(sub, (*path, name))
    elif not cmd.hidden:
        yield " ".join(path), cmd


def _json_param(cmd):
    return next((p for p in cmd.params if "--json" in getattr(p, "opts", ())), None)


cli_main._register()
VERBS = dict(_leaves())
WITH_JSON = sorted(v for v, c in VERBS.items() if _json_param(c) is not None)


def test_the_tree_is_walked():
    assert {"topo check", "drill run", "drill report", "detect eval", "playbook check",
            "blue block", "store push"} <= set(VERBS)
    assert not set(EXEMPT) - set(VERBS) and not TODO - set(VERBS), "stale names"


def test_every_verb_has_json_as_a_flag():
    missing = sorted(v for v in VERBS if v not in EXEMPT and v not in TODO
                     and _json_param(VERBS[v]) is None)
    assert not missing, f"verbs without --json: {missing}"
    done = sorted(v for v in TODO if _json_param(VERBS[v]) is not None)
    assert not done, f"take these out of TODO: {done}"
    for v in WITH_JSON:
        p = _json_param(VERBS[v])
        # a flag; `detect eval --json` still takes its old FILE value when one follows
        assert p.is_flag or getattr(p, "_flag_needs_value", False), v


@pytest.mark.parametrize("verb", WITH_JSON)
def test_a_usage_error_under_json_is_one_json_object(verb, capsys):
    with pytest.raises(SystemExit) as done:
        cli_main.main([*verb.split(), "--json", "--no-such-option"])
    out, err = capsys.readouterr()
    assert done.value.code == 2
    doc = json.loads(out)
    assert "--no-such-option" in doc["error"] and doc["exit_code"] == 2
    assert set(doc) >= {"error", "file", "line"}
    assert err.startswith("error: ") and "Traceback" not in err


def test_a_file_error_under_json_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nzones: [\n")
    for argv in (["topo", "check", bad, "--json"],
                 ["playbook", "check", bad, "--json"],
                 ["drill", "run", bad, "--json"]):
        with pytest.raises(SystemExit) as done:
            cli_main.main(list(map(str, argv)))
        out, _ = capsys.readouterr()
        doc = json.loads(out)
        assert done.value.code == 2 and doc["file"] == str(bad) and doc["line"] == 3, argv
    with pytest.raises(SystemExit) as done:
        cli_main.main(["drill", "report", "no-such-run", "--runs-dir", str(tmp_path), "--json"])
    out, _ = capsys.readouterr()
    assert done.value.code == 2 and json.loads(out)["error"]


def test_without_json_errors_stay_one_line_on_stderr(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main.main(["topo", "check", "no-such-topology"])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    assert err.count("\n") == 1 and "no topology named 'no-such-topology'" in err


def test_old_spellings_work_with_one_deprecation_line(tmp_path):
    r = cli("attack", "validate", "recon_bruteforce", "--topology", "fob")
    lines = r.stderr.splitlines()
    assert r.returncode == 0 and len(lines) == 1, r.stderr
    assert lines[0] == ("note: `cyberrange attack validate` is deprecated and will be removed: "
                        "use `cyberrange playbook check`")
    assert "recon-bruteforce" in r.stdout
    r = cli("store", "ping", "--to", "es://127.0.0.1:9?auth=none&retries=0", timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[0].startswith("note: `--to es://") and "use `--store" in r.stderr
    from cyberrange.cli.attack import _topology_and_playbook
    topo, pb = _topology_and_playbook(("fob", "recon_bruteforce"), None, None)
    assert topo.endswith("topologies/fob.yaml") and pb.endswith("recon_bruteforce.yaml")


def test_old_detect_eval_json_file_is_still_taken(tmp_path):
    r = cli("detect", "eval", tmp_path, "--json", tmp_path / "out.json")
    assert "note: `detect eval --json" in r.stderr
    assert r.returncode == 2 and "neither a run folder" in r.stderr   # an empty folder


def test_store_is_one_option_name():
    for verb in ("drill run", "detect run", "store ping", "store init", "store push"):
        names = {o for p in VERBS[verb].params for o in getattr(p, "opts", ())}
        assert "--store" in names, verb


def _cli_in(folder, *args, env=None):
    """The command line run from ``folder``, this checkout's code first (as the editable
    install does on CI), nothing else of the checkout on the path."""
    import subprocess
    import sys
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *map(str, args)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_content_by_name_from_any_folder(tmp_path):
    r = _cli_in(tmp_path, "topo", "check", "fob", "--json")
    assert r.returncode == 0, r.stderr
    r = _cli_in(tmp_path, "topo", "check", "topologies/fob.yaml")   # a checkout path, anywhere
    assert r.returncode == 0, r.stderr
    r = _cli_in(tmp_path, "detect", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["folder"] == str(ROOT / "detectors")
    mine = tmp_path / "mine"
    (mine / "topologies").mkdir(parents=True)
    (mine / "topologies" / "fob.yaml").write_text("name: broken\n")    # overrides the built-in
    r = _cli_in(tmp_path, "topo", "check", "fob", env={"CYBERRANGE_PATH": str(mine)})
    assert r.returncode == 2 and str(mine / "topologies" / "fob.yaml") in r.stderr, r.stderr
    r = _cli_in(tmp_path, "--content-path", mine, "topo", "check", "air_base")   # extends
    assert r.returncode == 0, r.stderr
    assert not [p for p in tmp_path.iterdir() if p != mine], "a check wrote into the folder"


def test_shell_completion_offers_verbs_and_content_names(tmp_path):
    """What docs/cli.md tells bash, zsh and fish users to load: click's completion, with the
    content names (``fob``) besides files."""
    for shell in ("bash", "zsh", "fish"):
        r = _cli_in(tmp_path, env={"_CYBERRANGE_COMPLETE": f"{shell}_source"})
        assert r.returncode == 0 and "_CYBERRANGE_COMPLETE" in r.stdout, (shell, r.stderr)
    r = _cli_in(tmp_path, env={"_CYBERRANGE_COMPLETE": "bash_complete",
                               "COMP_WORDS": "cyberrange drill run f", "COMP_CWORD": "3"})
    assert "plain,fob" in r.stdout.splitlines(), r.stdout
    r = _cli_in(tmp_path, env={"_CYBERRANGE_COMPLETE": "bash_complete",
                               "COMP_WORDS": "cyberrange play", "COMP_CWORD": "1"})
    assert "plain,playbook" in r.stdout.splitlines(), r.stdout


def test_store_takes_a_scheme_and_the_old_bare_path(tmp_path):
    pcap = ROOT / "attack_playbooks" / "pcaps" / "worm_scan.pcap"
    r = cli("detect", "run", "--pcap", pcap, "--store", f"duckdb:{tmp_path / 'a.duckdb'}",
            "--json")
    assert r.returncode == 0 and "deprecated" not in r.stderr, r.stderr
    assert (tmp_path / "a.duckdb").stat().st_size > 0 and json.loads(r.stdout.splitlines()[0])
    r = cli("detect", "run", "--pcap", pcap, "--store", tmp_path / "b.duckdb", "--json")
    assert r.returncode == 0 and (tmp_path / "b.duckdb").is_file(), r.stderr
    assert r.stderr.startswith(f"note: `--store {tmp_path / 'b.duckdb'}` is deprecated")
    r = cli("drill", "run", "fob", "--store", f"duckdb:{tmp_path / 'c.duckdb'}", "--json",
            "--runs-dir", tmp_path / "runs")         # refused while parsing: nothing is built
    assert r.returncode == 2 and "a drill keeps its DuckDB store" in json.loads(r.stdout)["error"]
    assert not (tmp_path / "runs").exists()
