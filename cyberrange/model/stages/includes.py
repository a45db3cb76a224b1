"""(v2) ``include:``: merge the included files into the document, each file once; what they
bring keeps the file and line it was written at, so later errors point there."""
from __future__ import annotations

import os

from cyberrange.model import inputpaths
from cyberrange.model.stages.base import Context
from cyberrange.model.stages.document import (
    MAX_ITEMS,
    MERGED_LISTS,
    MERGED_MAPS,
    check_counts,
    fragment_schema,
)
from cyberrange.model.yamlsrc import LIMITS, Doc, load_yaml, schema_error

MAIN_FILE_ONLY = ("name", "classification", "domain", "benign", "routing")


def includes(ctx: Context) -> None:
    """Merge every file named by ``include:`` (recursively, each file once) into the document;
    ``ctx.includes`` gets the included files' paths in merge order.

    An included file must lie in the top-level file's folder tree (or an allowed folder, see
    ``model/inputpaths.py``): that is checked before it is opened, and all the files together
    may have at most twice the size of one topology."""
    if not ctx.v2:
        return
    doc = ctx.doc
    root_dir = os.path.dirname(os.path.abspath(doc.file))
    tree = inputpaths.tree_of(doc.file)
    merged = ctx.includes
    seen = {os.path.realpath(doc.file)}
    budget = [2 * LIMITS["topology"].max_bytes - os.path.getsize(doc.file)]

    def show(file: str) -> str:
        return os.path.relpath(os.path.abspath(file), root_dir)

    def visit(cur: Doc, chain: list[tuple[str, str]]):
        for j, rel in enumerate(cur.data.get("include", [])):
            path = ("include", j)
            real = inputpaths.confine(rel, os.path.dirname(cur.file), tree)
            if real is None:
                raise cur.error(inputpaths.outside_message("included file", rel, tree), path)
            target = os.path.normpath(os.path.join(os.path.dirname(cur.file), rel))
            reals = [c[0] for c in chain]
            if real in reals:
                names = [c[1] for c in chain[reals.index(real):]] + [show(target)]
                raise cur.error(f"include cycle: {' -> '.join(names)}", path)
            if real in seen:
                continue                      # included already (a diamond): merge once
            if not os.path.isfile(target):
                raise cur.error(f"included file '{rel}' not found (looked for {target})", path)
            budget[0] -= os.path.getsize(target)
            if budget[0] < 0:
                raise cur.error(f"the topology and its includes are too large together (at "
                                f"most {2 * LIMITS['topology'].max_bytes:,} bytes)", path)
            inc = _read(target)
            seen.add(real)
            merged.append(target)
            _merge(doc, inc)
            for key in (*MERGED_MAPS, *MERGED_LISTS):
                if len(doc.data[key]) > MAX_ITEMS[key]:
                    raise cur.error(f"too many {key.replace('_', ' ')} with '{rel}' included: "
                                    f"{len(doc.data[key]):,} (at most {MAX_ITEMS[key]:,})", path)
            visit(inc, chain + [(real, show(target))])

    visit(doc, [(os.path.realpath(doc.file), show(doc.file))])


def _read(target: str) -> Doc:
    """One included file, checked as a fragment of a topology."""
    inc = load_yaml(target, "topology")
    if not isinstance(inc.data, dict):
        raise inc.error("an included file must be a mapping with zones, nodes, ...")
    check_counts(inc)
    err = schema_error(inc, fragment_schema())
    if err:
        raise err
    for key in MAIN_FILE_ONLY:
        if key in inc.data:
            raise inc.error(f"'{key}' belongs in the main topology file, not in an "
                            f"included file", (key,), key=True)
    return inc


def _merge(doc: Doc, inc: Doc) -> None:
    """Append ``inc``'s zones, nodes, ... to ``doc``; positions keep ``inc``'s file."""
    d = doc.data
    offset = {key: len(d[key]) for key in MERGED_LISTS}
    for key in MERGED_MAPS:
        for name, value in inc.data.get(key, {}).items():
            if name in d[key]:
                what = {"profiles": "profile", "zones": "zone", "blocks": "block",
                        "missions": "mission"}[key]
                file, line, _ = doc.where((key, name), key=True)
                raise inc.error(f"{what} '{name}' is defined twice: here and in {file}:{line}",
                                (key, name), key=True)
            d[key][name] = value
    for key in MERGED_LISTS:
        d[key].extend(inc.data.get(key, []))

    def moved(path):
        if len(path) < 2 or path[0] not in d or path[0] == "include":
            return None
        if path[0] in offset:
            if not isinstance(path[1], int):
                return None
            return (path[0], path[1] + offset[path[0]]) + path[2:]
        if path[0] in MERGED_MAPS:
            return path
        return None

    for source, target in ((inc.values, doc.values), (inc.keys, doc.keys)):
        for path, (line, col, *_) in source.items():
            new = moved(path)
            if new is not None:
                target[new] = (line, col, inc.file)
