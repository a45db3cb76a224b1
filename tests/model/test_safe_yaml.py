"""One rule per test: what the safe YAML loader and the confinement of file references refuse,
and that they say where (``FILE:LINE:COL``) in one line. No root, no twin."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import ROOT

from cyberrange.attack.playbook import load_playbook
from cyberrange.detect.registry import load_detector_file, load_detectors
from cyberrange.errors import UserError
from cyberrange.model.interop import import_clab
from cyberrange.model.loader import load_topology
from cyberrange.model.yamlsrc import LIMITS, load_yaml, parse_yaml
from cyberrange.store.es_config import EsConfig

FOB = ROOT / "topologies" / "fob.yaml"

BOMB = """a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

TOPO = """version: 2
name: t
classification: SECRET
{extra}
zones:
  lan: {{subnet: 10.0.0.0/24}}
nodes:
  - {{name: h1, kind: host, zone: lan}}
"""


def error_of(fn, *args) -> UserError:
    with pytest.raises(UserError) as e:
        fn(*args)
    text = str(e.value)
    assert "\n" not in text, text
    return e.value


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# -- aliases, nesting, size -------------------------------------------------------------------

def test_billion_laughs_fails_at_once_at_the_alias(tmp_path):
    f = write(tmp_path / "bomb.yaml", BOMB)
    t0 = time.perf_counter()
    e = error_of(load_yaml, f, "topology")
    assert time.perf_counter() - t0 < 0.5
    assert e.file == str(f) and e.line is not None and e.col is not None
    assert "alias" in e.message and "expands the document past the limit" in e.message
    assert BOMB.splitlines()[e.line - 1][e.col - 1] == "*"          # it points at an alias


def test_a_bomb_as_a_topology_and_as_a_playbook_is_one_line(tmp_path):
    f = write(tmp_path / "t.yaml", "version: 2\nname: x\nclassification: SECRET\n" + BOMB)
    assert "alias bomb" in error_of(load_topology, f).message
    f = write(tmp_path / "p.yaml", "version: 2\nname: x\nsteps: []\n" + BOMB)
    assert "alias bomb" in error_of(load_playbook, f).message


def test_recursive_and_unknown_aliases(tmp_path):
    assert "recursive alias" in error_of(parse_yaml, "a: &r [1, *r]\n").message
    assert "recursive alias" in error_of(parse_yaml, "a: &r {x: {y: *r}}\n").message
    e = error_of(parse_yaml, "a: *nowhere\n")
    assert "unknown alias *nowhere" in e.message and (e.line, e.col) == (1, 4)


def test_too_many_aliases_and_values():
    many = "a: &a x\nb: [" + ", ".join(["*a"] * 20_000) + "]\n"
    assert "too many aliases" in error_of(parse_yaml, many, "f", "playbook").message
    big = "a: [" + ", ".join(["1"] * (LIMITS["playbook"].max_values + 5)) + "]\n"
    e = error_of(parse_yaml, big, "f", "playbook")
    assert "too many values" in e.message and e.line == 1


def test_aliases_and_merges_still_work_within_the_limits():
    doc = parse_yaml("base: &b {x: 1, y: 2}\nlist: &l [1, 2]\nother:\n  <<: *b\n  y: 3\n"
                     "copy: *l\nboth: {<<: [*b, {x: 9, z: 0}]}\n")
    assert doc.data["other"] == {"x": 1, "y": 3}
    assert doc.data["copy"] == [1, 2] and doc.data["copy"] is not doc.data["list"]
    assert doc.data["both"] == {"x": 1, "y": 2, "z": 0}                 # *b wins, as in PyYAML
    assert doc.pos(("other", "y")) == (5, 6)                          # the explicit value
    assert doc.pos(("other", "x")) == (1, 14)                         # where the anchor has it


@pytest.mark.parametrize("depth", [3000, 200_000])
def test_deep_nesting_is_refused_at_the_level_too_many(depth):
    t0 = time.perf_counter()
    e = error_of(parse_yaml, "a: " + "[" * depth + "]" * depth + "\n", "f.yaml")
    assert time.perf_counter() - t0 < 0.5
    assert "nesting too deep" in e.message and (e.line, e.col) == (1, 4 + 63)


def test_nesting_up_to_the_limit_loads():
    n = LIMITS["yaml"].max_depth
    assert parse_yaml("[" * n + "]" * n).data is not None
    error_of(parse_yaml, "[" * (n + 1) + "]" * (n + 1))


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    cap = LIMITS["detectors"].max_bytes
    f = write(tmp_path / "d.yaml", b"# x\n" * (cap // 4 + 1))
    e = error_of(load_detector_file, f)
    assert e.message.startswith("file too large") and "1 MiB" in e.message
    assert e.line is None
    e = error_of(load_yaml, tmp_path, "topology")               # a folder
    assert e.message == "not a regular file"
    e = error_of(load_yaml, "/dev/zero", "topology")
    assert e.message == "not a regular file"


def test_the_biggest_legit_inputs_fit_the_limits(tmp_path):
    from cyberrange.model.generate import generate
    text = generate(10_000, version=2)
    assert len(text.encode()) * 4 < LIMITS["topology"].max_bytes
    doc = parse_yaml(text, "g.yaml", "topology")
    assert len(doc.values) * 2 < LIMITS["topology"].max_values


# -- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+400", "!!float nan"])
def test_nan_and_infinity_are_refused_anywhere(value):
    e = error_of(parse_yaml, f"a:\n  b: [1, {{c: {value}}}]\n", "f.yaml")
    assert "not a finite number" in e.message and (e.line, e.col) == (2, 14)


def test_nan_as_text_is_fine_and_dates_stay_text():
    assert parse_yaml("a: 'nan'\nb: .nan_x\nc: 2024-01-31\n").data == {
        "a": "nan", "b": ".nan_x", "c": "2024-01-31"}


@pytest.mark.parametrize("text, words", [
    ("a: !!binary aGVsbG8=\n", "unsupported value of type bytes"),
    ("a: !custom x\n", "unsupported tag !custom"),
    ("a: " + "9" * 5000 + "\n", "an integer with too many digits"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
    ("? [a]\n: 1\n", "a mapping key must be a plain word"),
])
def test_values_no_input_needs(text, words):
    e = error_of(parse_yaml, text, "f.yaml")
    assert words in e.message and e.line


def test_duplicate_keys_are_refused_at_the_second_one():
    e = error_of(parse_yaml, "a: 1\nb:\n  c: 1\n  c: 2\n", "f.yaml")
    assert e.message == "duplicate key 'c' (first given at line 3)" and (e.line, e.col) == (4, 3)


# -- characters and encodings -------------------------------------------------------------------

@pytest.mark.parametrize("raw, code, at", [
    (b"a: x\x00y\n", "U+0000", (1, 5)),
    (b"a: 1\nb: \x1b[31m\n", "U+001B", (2, 4)),
    (b"# \x07 in a comment\n", "U+0007", (1, 3)),
])
def test_nul_and_control_bytes_are_refused_with_their_position(tmp_path, raw, code, at):
    f = write(tmp_path / "f.yaml", raw)
    e = error_of(load_yaml, f)
    assert code in e.message and (e.line, e.col) == at


def test_control_characters_written_as_escapes_are_refused():
    e = error_of(parse_yaml, 'a: ok\nname: "evil\\x1b[2J"\n', "f.yaml")
    assert "control character U+001B" in e.message and (e.line, e.col) == (2, 7)
    e = error_of(parse_yaml, '"a\\0b": 1\n', "f.yaml")
    assert "U+0000" in e.message
    assert parse_yaml('a: "tab\\there\\nnewline"\n').data == {"a": "tab\there\nnewline"}


def test_non_utf8_names_the_byte_offset_line_and_column(tmp_path):
    f = write(tmp_path / "f.yaml", "a: 1\nname: caf".encode() + b"\xe9\n")
    e = error_of(load_yaml, f)
    assert e.message.startswith("not UTF-8 text: byte 0xe9 at byte offset 14")
    assert (e.line, e.col) == (2, 10)
    f = write(tmp_path / "g.yaml", "a: 1\n".encode("utf-16"))
    assert "not UTF-8" in error_of(load_yaml, f).message
    f = write(tmp_path / "bom.yaml", b"\xef\xbb\xbfa: 1\n")
    assert load_yaml(f).data == {"a": 1}


def test_an_error_never_quotes_the_source_around_it(tmp_path):
    f = write(tmp_path / "f.yaml", "secret-line: s3cr3t-value\n  bad: [\n")
    e = error_of(load_yaml, f)
    assert "s3cr3t" not in str(e) and e.message.startswith("invalid YAML")


# -- detectors -----------------------------------------------------------------------------------

def test_detector_files_refuse_duplicate_keys_empty_files_and_bad_names(tmp_path):
    d = tmp_path / "detectors"
    f = write(d / "x.yaml", "detectors:\n  - name: a\n    family: portscan\n    family: flood\n")
    e = error_of(load_detector_file, f)
    assert "duplicate key 'family'" in e.message and e.line == 4
    f.write_text("")
    e = error_of(load_detector_file, f)
    assert e.message.startswith("empty file") and e.line == 1
    f.write_text("detectors: []\n")
    assert load_detector_file(f) == []
    f.write_text('detectors:\n  - name: "a\\x07b"\n    family: portscan\n')
    assert "control character U+0007" in error_of(load_detector_file, f).message
    f.write_text('detectors:\n  - name: "two words"\n    family: portscan\n')
    e = error_of(load_detector_file, f)
    assert "detector name 'two words' is not valid" in e.message and (e.line, e.col) == (2, 11)
    f.write_text("detectors:\n  - name: a\n    family: portscan\n    settings: {window: .inf}\n")
    assert "not a finite number" in error_of(load_detector_file, f).message


def test_duplicate_detector_names_across_files_point_at_the_second(tmp_path):
    d = tmp_path / "detectors"
    write(d / "a.yaml", "detectors:\n  - name: same\n    family: portscan\n")
    write(d / "b.yaml", "# b\ndetectors:\n  - name: same\n    family: flood\n")
    e = error_of(load_detectors, d)
    assert e.file == str(d / "b.yaml") and (e.line, e.col) == (3, 11)
    assert f"{d / 'a.yaml'}:2" in e.message


# -- file references: includes, pcaps, Elasticsearch files ---------------------------------------

@pytest.fixture
def secret(tmp_path):
    """A secret outside the tree of the files under test (tmp_path/tree)."""
    return write(tmp_path / "outside" / "secret.yaml", '"root:$6$SECRETHASH": 1\n')


@pytest.mark.parametrize("include", ["/etc/shadow", "../../../../../../../etc/shadow",
                                     "../outside/secret.yaml", "link.yaml",
                                     "sub/../../outside/secret.yaml"])
def test_includes_outside_the_tree_are_refused_before_reading(tmp_path, secret, include):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "link.yaml").symlink_to(secret)
    top = write(tree / "top.yaml", TOPO.format(extra=f"include: [{include}]"))
    e = error_of(load_topology, top)
    assert "is outside" in e.message and (e.line, e.col) == (4, 11)
    assert "SECRETHASH" not in str(e) and "root:" not in str(e)


def test_includes_inside_the_tree_and_allowed_folders_load(tmp_path, secret, monkeypatch):
    from cyberrange.model import inputpaths
    tree = tmp_path / "tree"
    write(tree / "parts" / "more.yaml", "zones:\n  more: {subnet: 10.0.1.0/24}\n")
    write(tree / "parts" / "up.yaml", "include: [../parts/more.yaml]\n")      # ../ inside the tree
    top = write(tree / "top.yaml", TOPO.format(extra="include: [parts/up.yaml]"))
    assert "more" in load_topology(top).zones
    outside = write(tmp_path / "shared" / "z.yaml", "zones:\n  shared: {subnet: 10.0.2.0/24}\n")
    top.write_text(TOPO.format(extra=f"include: [{outside}]"))
    assert "is outside" in error_of(load_topology, top).message
    monkeypatch.setenv("CYBERRANGE_INPUT_PATHS", str(outside.parent))
    assert "shared" in load_topology(top).zones
    monkeypatch.delenv("CYBERRANGE_INPUT_PATHS")
    inputpaths.allow_outside([outside.parent])
    try:
        assert "shared" in load_topology(top).zones
    finally:
        inputpaths.allow_outside([])


def test_allow_outside_on_the_command_line(tmp_path, capsys):
    from cyberrange.cli.main import main
    outside = write(tmp_path / "shared" / "z.yaml", "zones:\n  shared: {subnet: 10.0.2.0/24}\n")
    top = write(tmp_path / "tree" / "top.yaml", TOPO.format(extra=f"include: [{outside}]"))

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        return e.value.code, capsys.readouterr().err
    code, err = run("topo", "check", str(top))
    assert code == 2 and err.count("\n") == 1 and "is outside" in err
    code, err = run("topo", "check", "--allow-outside", str(outside.parent), str(top))
    assert code == 0, err
    code, err = run("topo", "check", str(top))             # it does not stick to the process
    assert code == 2


def test_include_totals_and_block_amplification_are_capped(tmp_path):
    top = write(tmp_path / "t.yaml", TOPO.format(extra="""blocks:
  cell:
    params: [n]
    nodes: [{name: "c{n}", kind: host, zone: lan}]
instances:
  - {block: cell, count: 10000}"""))
    t0 = time.perf_counter()
    e = error_of(load_topology, top)
    assert time.perf_counter() - t0 < 1
    assert "would make 10,001 nodes" in e.message and e.line == 9


PLAYBOOK = """version: 2
name: p
topology: fob
steps:
  - id: r
    technique: replay
    actor: ops-maint
    targets: [ops-files, c2-server]   # the shipped capture has two hosts besides its source
    params: {{pcap: {pcap}}}
"""


def test_pcap_outside_the_tree_is_refused(tmp_path, secret):
    fob = load_topology(FOB)
    tree = tmp_path / "tree"
    for pcap in ("/etc/shadow", "../outside/secret.yaml", "../../../../../../etc/passwd"):
        pb = write(tree / "p.yaml", PLAYBOOK.format(pcap=pcap))
        e = error_of(load_playbook, pb, fob)
        assert "params.pcap" in e.message and "is outside" in e.message and e.line == 9
    shipped = ROOT / "attack_playbooks" / "pcaps" / "worm_scan.pcap"          # the library
    # a real capture: validate reads a replay's pcap (its addresses) once the path is allowed
    write(tree / "caps" / "x.pcap", shipped.read_bytes())
    pb.write_text(PLAYBOOK.format(pcap="caps/x.pcap"))
    assert load_playbook(pb, fob).steps[0].params["pcap"] == str((tree / "caps" / "x.pcap").resolve())
    pb.write_text(PLAYBOOK.format(pcap=shipped))
    assert load_playbook(pb, fob).steps[0].params["pcap"] == str(shipped.resolve())


# -- playbook numbers -----------------------------------------------------------------------------

STEP = """version: 2
name: p
steps:
  - id: s
    technique: T1046
    actor: ops-maint
    targets: [ops-files]
    {extra}
"""


@pytest.mark.parametrize("extra, words", [
    ("timing: {delay: .nan}", "not a finite number"),
    ("timing: {at: 1e12}", "expected a number"),
    ("timing: {at: 1.0e+12}", "out of range (must be <= 86400)"),
    ("timing: {every: 86401}", "out of range (must be <= 86400)"),
    ("timing: {repeat: 100000}", "out of range (must be <= 10000)"),
    ("timing: {repeat: 5000, every: 60}", "last more than a day"),
    ("params: {timeout: .inf}", "not a finite number"),
    ("params: {timeout: 99999}", "params.timeout: 99999 is too large (at most 3,600)"),
    ("params: {rate: 1.0e+300}", "above the per-step cap"),
])
def test_playbook_timing_and_params_are_bounded(tmp_path, extra, words):
    pb = write(tmp_path / "p.yaml", STEP.format(extra=extra))
    e = error_of(load_playbook, pb)
    assert words in e.message and e.line == 8, e


# -- Elasticsearch --------------------------------------------------------------------------------

def test_a_malformed_es_config_file_is_one_line_with_a_position(tmp_path):
    f = write(tmp_path / "es.yaml", "elasticsearch:\n  url: [es://h:9200\n  prefix: x\n")
    e = error_of(EsConfig.parse, str(f))
    assert e.message.startswith("invalid YAML") and e.line
    f.write_text("elasticsearch:\n  url: es://h:9200?auth=none\n  timeout: .nan\n")
    assert "not a finite number" in error_of(EsConfig.parse, str(f)).message
    f.write_text("elasticsearch:\n  url: es://h:9200?auth=none\n  workers: 100000\n")
    e = error_of(EsConfig.parse, str(f))
    assert "out of range" in e.message and e.line == 3
    f.write_text("elasticsearch:\n  url: es://h:9200?auth=none\n  spool: /etc/cron.d\n")
    e = error_of(EsConfig.parse, str(f))
    assert "is outside" in e.message and e.line == 3
    f.write_text("elasticsearch:\n  url: es://h:9200?auth=none\n  spool: spool\n")
    assert EsConfig.parse(str(f)).spool == str(tmp_path / "spool")
    f.write_text(f"elasticsearch:\n  url: {f}\n")                  # itself: no recursion
    e = error_of(EsConfig.parse, str(f))
    assert "'url' must be a URL" in e.message and e.line == 2


def test_plain_es_with_credentials_warns_once(monkeypatch, capsys):
    from cyberrange.store import es_config
    monkeypatch.setattr(es_config, "_warned_cleartext", set())
    monkeypatch.setenv("CYBERRANGE_ES_API_KEY", "k")
    for _ in range(2):
        es_config.make_client(EsConfig.parse("es://127.0.0.1:9200")).close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning:") and "clear text" in err
    assert "k" not in err.split(":", 1)[1].replace("key", "").replace("network", "").split()
    es_config.make_client(EsConfig.parse("es://127.0.0.1:9200?auth=none")).close()
    assert capsys.readouterr().err == ""


# -- containerlab ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("name: x\ntopology:\n  nodes: [a, b]\n", "topology.nodes must be a mapping"),
    ("name: x\ntopology:\n  nodes: {a: 5}\n", "node 'a' must be a mapping"),
    ("name: x\ntopology:\n  nodes: {a: {labels: [x]}}\n", "labels must be a mapping"),
    ("name: x\ntopology:\n  nodes: {a: {}}\n  links: [5]\n", "link 1 must be a mapping"),
    ("name: x\ntopology:\n  nodes: {a: {kind: linux, kind: srl}}\n", "duplicate key 'kind'"),
])
def test_containerlab_shapes_are_checked(tmp_path, text, words):
    f = write(tmp_path / "x.clab.yml", text)
    e = error_of(import_clab, f)
    assert words in e.message and e.line
