"""The techniques a playbook may name, found in the modules of ``cyberrange.attack.techniques``.

Each technique is declared next to the function that runs it (``spec.technique``); this table
is what the playbook loader validates against, the agent runs from and the docs' parameter
tables are written from (``python -m cyberrange.attack.catalog --markdown``). Importing it does
not import scapy: technique modules import it inside their functions.
"""
from __future__ import annotations

import re
import sys

from cyberrange.attack.spec import Param, Technique, type_text  # noqa: F401  (re-exported)
from cyberrange.discover import package_modules


def _discover() -> dict[str, Technique]:
    table: dict[str, Technique] = {}
    for module in package_modules("cyberrange.attack.techniques"):
        for obj in vars(module).values():
            if not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
                continue                        # imported from another module: counted there
            for t in getattr(obj, "techniques", None) or ():
                if t.id in table:
                    raise RuntimeError(f"technique {t.id} declared twice ({module.__name__})")
                table[t.id] = t
    return table


TECHNIQUES: dict[str, Technique] = _discover()


# --------------------------------------------------------------------------- docs/techniques.md
#: a generated parameter table in the docs: ``<!-- params: ID -->`` ... ``<!-- /params -->``
TABLE = re.compile(r"(<!-- params: (?P<id>\S+) -->\n)(?P<body>.*?)(<!-- /params -->)", re.S)


def value_text(value) -> str:
    """A default as YAML would write it: true, none, [a, b], ""."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


def markdown_table(t: Technique) -> str:
    """The parameter table of one technique, as docs/techniques.md shows it."""
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {type_text(p.type)} | {value_text(p.default)} | {p.help} |"
             for name, p in t.params.items()]
    if not t.params:
        rows.append("| - | | | no parameters |")
    return "\n".join(rows) + "\n"


def render_markdown(text: str) -> str:
    """``text`` with every generated parameter table written from the catalogue. Raises
    ValueError for a table of an unknown technique, or a technique without a table."""
    seen = []

    def table(m):
        tid = m.group("id")
        if tid not in TECHNIQUES:
            raise ValueError(f"a parameter table names an unknown technique {tid!r}")
        seen.append(tid)
        return m.group(1) + markdown_table(TECHNIQUES[tid]) + m.group(4)
    out = TABLE.sub(table, text)
    missing = [tid for tid in TECHNIQUES if tid not in seen]
    if missing:
        raise ValueError(f"no parameter table for {', '.join(missing)} (add "
                         f"'<!-- params: ID -->' and '<!-- /params -->' lines where it belongs)")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path
    ap = argparse.ArgumentParser(prog="python -m cyberrange.attack.catalog",
                                 description="Write the parameter tables of docs/techniques.md "
                                             "from the technique catalogue.")
    ap.add_argument("--markdown", metavar="FILE", default="docs/techniques.md",
                    help="the page whose tables are rewritten (default: docs/techniques.md)")
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if a table differs from the catalogue")
    args = ap.parse_args(argv)
    path = Path(args.markdown)
    old = path.read_text(encoding="utf-8")
    try:
        new = render_markdown(old)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"{path}: parameter tables differ from the catalogue; run "
                  f"python -m cyberrange.attack.catalog", file=sys.stderr)
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
