"""The model starts: the topology's own fields, then the names of its parts (zones, links and
nodes share one namespace; sensor names are unique among sensors)."""
from __future__ import annotations

from cyberrange.model.stages.base import Context
from cyberrange.model.topology import Topology


def topology(ctx: Context) -> None:
    """The empty model with the topology's name, classification, description and domain."""
    d = ctx.doc.data
    default = ctx.defaults["topology"]
    ctx.topo = Topology(
        name=d["name"], classification=d["classification"],
        description=d.get("description", default["description"]),
        domain=d.get("domain", default["domain"]),
        file=ctx.doc.file, version=d["version"], includes=ctx.includes,
    )


def names(ctx: Context) -> None:
    """No name twice: zones, links and nodes share one namespace, sensors have their own."""
    doc, d = ctx.doc, ctx.doc.data
    seen: dict[str, tuple[str, tuple]] = {}          # name -> (what, path of the name)
    for z in d.get("zones", {}):
        seen[z] = ("zone", ("zones", z))
    for i, link in enumerate(d.get("links", [])):
        _claim(ctx, seen, link["name"], "link", ("links", i, "name"))
    for i, node in enumerate(d["nodes"]):
        _claim(ctx, seen, node["name"], "node", ("nodes", i, "name"))
    sensors: dict[str, tuple] = {}
    for i, s in enumerate(d.get("sensors", [])):
        path = ("sensors", i, "name")
        if s["name"] in sensors:
            first = doc.line_of(sensors[s["name"]], path)
            raise doc.error(f"duplicate sensor name '{s['name']}' (first at {first})", path)
        sensors[s["name"]] = path


def _claim(ctx: Context, seen, name, what, path):
    if name in seen:
        other, other_path = seen[name]
        first = ctx.doc.line_of(other_path, path, key=other == "zone")
        if other == what:
            raise ctx.doc.error(f"duplicate {what} name '{name}' (first at {first})", path)
        raise ctx.doc.error(
            f"{what} name '{name}' is already a {other} name ({first}); zones, links "
            f"and nodes share one namespace", path)
    seen[name] = (what, path)
