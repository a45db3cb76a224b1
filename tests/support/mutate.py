"""Seeded mutations of input files, for the fuzz test of every input kind (tests/structure/test_fuzz_inputs.py).

Each operator takes the file's bytes and a ``random.Random`` and returns new bytes; some know
the kind of file (``ctx``) to aim at what matters there (a playbook's timing, an include, an
Elasticsearch config's ``ca``). The same seed gives the same mutants, so a failure can be
replayed: ``Mutant.op`` and ``Mutant.seed`` say how it was made.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

SECRET = "root:$6$FUZZ-SECRET-9f8e7d$notahash0123456789:19000:0:99999:7:::"

# a value that must never show in any output: the planted secret's distinctive part
SECRET_MARK = "FUZZ-SECRET-9f8e7d"


@dataclass
class Ctx:
    """What an operator may aim at in a file of one kind."""
    kind: str                                    # topology | playbook | detectors | es | clab
    cap: int                                     # the kind's size limit, bytes
    secret_rel: str = "../../outside/secret.yaml"  # the planted secret, from the mutant's folder
    secret_abs: str = ""
    extra: dict = field(default_factory=dict)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def _content_lines(lines: list[bytes]) -> list[int]:
    """Indexes of lines that hold YAML (not blank, not a comment)."""
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith(b"#")]


def _pick_line(lines, rng) -> int:
    idx = _content_lines(lines) or list(range(len(lines)))
    return rng.choice(idx)


# -- generic operators ----------------------------------------------------------------------

def flip_bytes(data, rng, ctx):
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def delete_line(data, rng, ctx):
    lines = _lines(data)
    del lines[_pick_line(lines, rng)]
    return _join(lines)


def duplicate_line(data, rng, ctx):
    lines = _lines(data)
    i = _pick_line(lines, rng)
    lines.insert(i, lines[i])
    return _join(lines)


def swap_lines(data, rng, ctx):
    lines = _lines(data)
    i, j = _pick_line(lines, rng), _pick_line(lines, rng)
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines)


def truncate(data, rng, ctx):
    return data[:rng.randrange(max(1, len(data)))]


TOKENS = [b":", b"- ", b"[", b"]", b"{", b"}", b"&a ", b"*a", b"*nowhere", b"!!binary ",
          b"!!python/object/apply:os.system [id]", b"<<: *a", b"\t", b"'", b'"', b"|", b">",
          b"? ", b"%YAML 1.1\n", b"---\n", b"...\n", b"!!set ", b"!!omap ", b"!custom ", b"#",
          b"\xef\xbb\xbf", b"\\", b"@", b"`", b"\r\n", b"\r"]


def insert_token(data, rng, ctx):
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(TOKENS) + data[at:]


_SCALAR = re.compile(rb"^(\s*(?:- )?[A-Za-z_][\w.-]*:[ ]+)([^\s#{}\[\],][^#\n]*?)\s*$", re.M)

WEIRD_VALUES = [b"[]", b"{}", b"null", b"''", b".nan", b".inf", b"-.inf", b"1.0e+400", b"-1",
                b"0", b"99999999999999999999", b"1" * 5000, b"2001-13-45", b"2024-01-01",
                b"!!binary AAAA", b"!!python/object/apply:os.system [id]", b"*undefined",
                b"0x7fffffffffffffff", b"0o777", b"1_000", b"190:20:30", b"~", b"yes", b"on",
                b'"\\x1b[31mred\\x1b[0m"', b'"a\\0b"', b'"line\\nbreak"', b"'" + b"x" * 3000 + b"'",
                b"&anc {x: 1}", b"!!float nan", b"!!int 12x", b"- a\n- b"]


def weird_value(data, rng, ctx):
    found = list(_SCALAR.finditer(data))
    if not found:
        return insert_token(data, rng, ctx)
    m = rng.choice(found)
    return data[:m.start(2)] + rng.choice(WEIRD_VALUES) + data[m.end(2):]


_NUMBER = re.compile(rb"(?<=[:\[, ] )(-?[0-9]+(?:\.[0-9]+)?)(?=[\s,\]}])")


def nan_inf(data, rng, ctx):
    found = list(_NUMBER.finditer(data))
    value = rng.choice([b".nan", b".NaN", b".inf", b"-.inf", b"+.Inf", b"1.0e+999", b"!!float nan"])
    if not found:
        return weird_value(data, rng, ctx)
    m = rng.choice(found)
    return data[:m.start(1)] + value + data[m.end(1):]


def big_number(data, rng, ctx):
    found = list(_NUMBER.finditer(data))
    value = rng.choice([b"1e12", b"1.0e+12", b"9" * 30, b"9" * 4400, b"-99999999", b"0.0",
                        b"4294967296", b"1.0e-320"])
    if not found:
        return weird_value(data, rng, ctx)
    m = rng.choice(found)
    return data[:m.start(1)] + value + data[m.end(1):]


def alias_bomb(data, rng, ctx):
    """A billion laughs, as a top-level key or as the value of a scalar."""
    width = rng.choice([9, 10, 20])
    levels = rng.choice([6, 9, 12])
    out = [b'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        refs = b", ".join([b"*l%d" % (k - 1)] * width)
        out.append(b"lol%d: &l%d [%s]" % (k, k, refs))
    bomb = b"\n".join(out) + b"\n"
    if rng.random() < 0.5:
        return bomb + data
    m = list(_SCALAR.finditer(data))
    if not m:
        return bomb + data
    x = rng.choice(m)
    return bomb + data[:x.start(2)] + b"*l%d" % (levels - 1) + data[x.end(2):]


def merge_bomb(data, rng, ctx):
    out = [b"m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    for k in range(1, 12):
        keys = b", ".join(b"k%d: *m%d" % (j, k - 1) for j in range(8))
        out.append(b"m%d: &m%d {<<: *m%d, %s}" % (k, k, k - 1, keys))
    return b"\n".join(out) + b"\n" + data


def recursive_alias(data, rng, ctx):
    return rng.choice([b"r: &r [*r]\n", b"r: &r {x: *r}\n", b"r: &r {<<: *r}\n"]) + data


def many_aliases(data, rng, ctx):
    n = min(200_000, max(1000, ctx.cap // 5))
    return b"a: &a x\nmany: [" + b", ".join([b"*a"] * n) + b"]\n" + data


def deep_nesting(data, rng, ctx):
    n = rng.choice([100, 3000, 100_000])
    style = rng.choice(["flow", "flowmap", "block"])
    if style == "flow":
        deep = b"[" * n + b"]" * n
    elif style == "flowmap":
        deep = b"{a: " * n + b"1" + b"}" * n
    else:
        n = min(n, 3000)
        deep = b"\n".join(b"  " * k + b"- " for k in range(n)) + b"x"
    m = list(_SCALAR.finditer(data))
    if style != "block" and m and rng.random() < 0.5:
        x = rng.choice(m)
        return data[:x.start(2)] + deep + data[x.end(2):]
    return b"deep:\n" + deep + b"\n" + data if style == "block" else b"deep: " + deep + b"\n" + data


def nul_byte(data, rng, ctx):
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice([b"\x00", b"\x07", b"\x1b[2J", b"\x7f", b"\xc2\x85",
                                   b"\xc2\x9b", b"\xef\xbf\xbe"]) + data[at:]


def non_utf8(data, rng, ctx):
    at = rng.randrange(len(data) + 1)
    bad = rng.choice([b"\xff", b"\xfe\xff", b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                      b"\x80", b"caf\xe9"])
    if rng.random() < 0.2:
        return "# é\n".encode("utf-16") + data          # a UTF-16 file
    return data[:at] + bad + data[at:]


def huge(data, rng, ctx):
    """Over the kind's limit (refused unread), or just under it with repetitive content."""
    how = rng.choice(["over", "comments", "scalar", "repeat"])
    if how == "over":
        pad = b"# padding padding padding padding padding padding padding padding padding\n"
        return data + pad * (ctx.cap // len(pad) + 2)
    room = int(ctx.cap * 0.97) - len(data)
    if room <= 0:
        return data
    if how == "comments":
        line = b"# " + b"x" * 77 + b"\n"
        return data + line * (room // len(line))
    if how == "scalar":
        return b"big: '" + b"y" * (room - 16) + b"'\n" + data
    body = data.split(b"\n", 1)[-1] if rng.random() < 0.5 else data
    return data + b"\n" + body * max(1, room // max(1, len(body) + 1))


_NAME = re.compile(rb"^(\s*(?:- )?(?:name|id|user|zone|family):[ ]+)([^\s#{}\[\],][^#\n,}]*)", re.M)


def control_in_name(data, rng, ctx):
    found = list(_NAME.finditer(data))
    evil = rng.choice([b'"a\\x07b"', b'"x\\x1b[31my"', b'"ok\\nrm -rf"', b'"a\\tb"', b'"\\0"',
                       b'"e\\u202egnp"', b"'name with spaces'", b"a\x1bb", b'"\\x85"', b'"caf\\xe9"',
                       b'"' + b"n" * 500 + b'"', b"''"])
    if not found:
        return insert_token(data, rng, ctx)
    m = rng.choice(found)
    return data[:m.start(2)] + evil + data[m.end(2):]


_KEYLINE = re.compile(rb"^(\s*)([A-Za-z_][\w.-]*):[ ]+\S.*$", re.M)


def duplicate_key(data, rng, ctx):
    """Repeat a ``key: value`` line right after itself (same mapping), or a flow key."""
    found = list(_KEYLINE.finditer(data))
    flow = list(re.finditer(rb"\{([A-Za-z_][\w-]*): ([^,}]+)", data))
    if flow and (not found or rng.random() < 0.3):
        m = rng.choice(flow)
        return data[:m.end()] + b", " + m.group(1) + b": " + m.group(2) + data[m.end():]
    if not found:
        return duplicate_line(data, rng, ctx)
    m = rng.choice(found)
    line = m.group(0)
    if line.lstrip().startswith(b"- "):
        indent = m.group(1) + b"  "
        line = indent + line.lstrip()[2:]
        return data[:m.end()] + b"\n" + line + data[m.end():]
    return data[:m.end()] + b"\n" + line + data[m.end():]


def empty(data, rng, ctx):
    return rng.choice([b"", b"\n", b"# only a comment\n", b"---\n", b"~\n", b"[]\n", b"{}\n",
                       b"--- a\n--- b\n", b"\xef\xbb\xbf"])


# -- kind-specific: file references -----------------------------------------------------------

def traversal(data, rng, ctx):
    """A path out of the tree, to a planted secret or to system files (by kind)."""
    target = rng.choice([b"/etc/shadow", b"/etc/passwd", b"../../../../../../../../etc/shadow",
                         ctx.secret_rel.encode(), ctx.secret_abs.encode(), b"/dev/zero",
                         b"/proc/self/environ", b"link-out.yaml", b"parts/../../../outside/secret.yaml",
                         b"./../../outside/secret.yaml", b"/", b"", b"\\x00"])
    if ctx.kind == "topology":
        if re.search(rb"^include:", data, re.M) and rng.random() < 0.7:
            return re.sub(rb"^include:.*$", lambda m: b"include: [" + target + b"]", data,
                          count=1, flags=re.M)
        return re.sub(rb"^(version: .*)$", lambda m: m.group(1) + b"\ninclude: [" + target + b"]",
                      data, count=1, flags=re.M)
    if ctx.kind == "playbook":
        if b"pcap:" in data:
            return re.sub(rb"pcap: [^,}\n]+", lambda m: b"pcap: " + target, data)
        return re.sub(rb"^(\s*)technique: .*$", lambda m: m.group(1) + b"technique: replay\n"
                      + m.group(1) + b"params: {pcap: " + target + b"}", data, count=1, flags=re.M)
    if ctx.kind == "es":
        key = rng.choice([b"ca", b"spool"])
        if rng.random() < 0.3:
            return re.sub(rb"(url: [^\n?]+)", lambda m: m.group(1) + b"?" + key + b"=" + target,
                          data, count=1)
        return data + b"  " + key + b": " + target + b"\n"
    # detectors and containerlab name no files: an include-like key is just unknown
    return data + b"include: [" + target + b"]\n"


def timing_abuse(data, rng, ctx):
    """Playbooks: absurd or non-finite timing and params."""
    key = rng.choice([b"delay", b"at", b"every", b"duration", b"jitter", b"repeat", b"rate"])
    value = rng.choice([b".nan", b".inf", b"1e12", b"1.0e+12", b"99999999999", b"-5", b"0",
                        b"10000000000000000000000", b"86401", b"!!float inf", b"[1]", b"{}",
                        b"''", b"null", b"1000000"])
    pkey = rng.choice([b"timeout", b"rate", b"count", b"interval", b"size", b"retries",
                       b"duration", b"pause", b"chunk", b"port", b"seed", b"repeat"])
    if rng.random() < 0.5:
        new = b"    timing: {" + key + b": " + value + b"}"
    else:
        new = b"    params: {" + pkey + b": " + value + b"}"
    lines = _lines(data)
    steps = [i for i, ln in enumerate(lines) if ln.startswith(b"  - id:")]
    if not steps:
        return weird_value(data, rng, ctx)
    i = rng.choice(steps)
    # drop an existing timing/params line of that step so the new one is not a duplicate key
    j = i + 1
    while j < len(lines) and lines[j].startswith(b"    "):
        if lines[j].startswith(new.split(b":")[0] + b":"):
            del lines[j]
            continue
        j += 1
    lines.insert(i + 1, new)
    return _join(lines)


def url_abuse(data, rng, ctx):
    """Elasticsearch: the url names a file (itself, the secret), credentials or odd schemes."""
    url = rng.choice([b"es.yaml", b"./es.yaml", ctx.secret_rel.encode(), b"/etc/shadow",
                      b"es://user:pw@127.0.0.1:9", b"ftp://127.0.0.1", b"es://[::1", b"es://",
                      b"es://127.0.0.1:99999", b"es://127.0.0.1:9/x?auth=none",
                      b"es://127.0.0.1:9?auth=none&timeout=nan", b"es://127.0.0.1:9?workers=1e9",
                      b"es://h\x00ost:9", b"es://" + b"a" * 3000 + b":9"])
    return re.sub(rb"url: [^\n]+", lambda m: b"url: " + url, data, count=1)


GENERIC = [flip_bytes, delete_line, duplicate_line, swap_lines, truncate, insert_token,
           weird_value, nan_inf, big_number, alias_bomb, merge_bomb, recursive_alias,
           many_aliases, deep_nesting, nul_byte, non_utf8, huge, control_in_name, duplicate_key,
           empty, traversal]
BY_KIND = {"playbook": [timing_abuse, timing_abuse], "es": [url_abuse, url_abuse]}


def operators(kind: str) -> list:
    return GENERIC + BY_KIND.get(kind, [])


@dataclass
class Mutant:
    kind: str
    source: str          # the file it was made from
    op: str              # the operator(s)
    seed: int
    data: bytes


def mutate(kind: str, source: str, data: bytes, index: int, seed: int, ctx: Ctx) -> Mutant:
    """Mutant number ``index`` of ``data``: operators in turn (every one is used), a second
    random one on top for a third of them."""
    ops = operators(kind)
    rng = random.Random(f"{seed}/{kind}/{source}/{index}")
    chosen = [ops[index % len(ops)]]
    if rng.random() < 0.33:
        chosen.append(rng.choice(ops))
    out = data
    for op in chosen:
        out = op(out, rng, ctx)
    return Mutant(kind, source, "+".join(op.__name__ for op in chosen), seed, out)
