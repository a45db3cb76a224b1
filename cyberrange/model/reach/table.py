"""The reachability matrix: source zones (or one node) against every service of every
destination host plus ICMP echo, each cell decided by :class:`ReachIndex` per address class."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cyberrange.errors import UserError
from cyberrange.model.reach.index import ReachIndex
from cyberrange.model.topology import Node, Topology
from cyberrange.model.yamlsrc import did_you_mean


@dataclass
class MatrixColumn:
    node: str
    zone: str
    service: str            # the service type, or "icmp"
    proto: str
    port: int | None
    dst_cls: int

    @property
    def label(self) -> str:
        return f"{self.node}:icmp" if self.proto == "icmp" else f"{self.node}:{self.proto}/{self.port}"


@dataclass
class MatrixRow:
    name: str
    kind: str               # "zone" or "node"
    members: dict[int, int]  # source class -> number of hosts
    hosts: set[str]


@dataclass
class ReachMatrix:
    """Rows are sources (zones or nodes), columns destination services plus ICMP per host.

    ``cells[r][c]`` is ``(allowed hosts, hosts, a reason)``: a zone row counts its hosts (the
    destination itself left out), so a cell is all, none or some of them."""
    rows: list[MatrixRow]
    columns: list[MatrixColumn]
    cells: list[list[tuple[int, int, str]]]

    @staticmethod
    def state(cell: tuple[int, int, str]) -> str:
        ok, total, _ = cell
        if total == 0:
            return "self"
        return "allow" if ok == total else "deny" if ok == 0 else "partial"

    def to_json(self) -> dict:
        return {
            "rows": [{"name": r.name, "kind": r.kind, "hosts": len(r.hosts)} for r in self.rows],
            "columns": [{"node": c.node, "zone": c.zone, "service": c.service, "proto": c.proto,
                         "port": c.port, "label": c.label} for c in self.columns],
            "matrix": {r.name: {c.label: {"verdict": self.state(cell), "allowed": cell[0],
                                          "of": cell[1], "why": cell[2]}
                                for c, cell in zip(self.columns, row)}
                       for r, row in zip(self.rows, self.cells)},
        }


def _select(topo: Topology, what: str | None, flag: str) -> tuple[str, list[Node]]:
    """``what`` is a zone or node name (or None: all): its kind and its hosts."""
    if what is None:
        return "all", topo.hosts
    if what in topo.zones:
        return "zone", [n for n in topo.hosts if any(i.zone == what for i in n.interfaces)]
    if what in topo.nodes:
        node = topo.nodes[what]
        if node.is_router:
            raise UserError(f"{flag} {what}: is a {node.kind}; the matrix is between hosts")
        return "node", [node]
    raise UserError(f"{flag} '{what}' is neither a zone nor a node"
                    f"{did_you_mean(what, [*topo.zones, *topo.nodes])}")


def reach_matrix(topo: Topology, src: str | None = None, dst: str | None = None,
                 index: ReachIndex | None = None) -> ReachMatrix:
    """The reachability matrix: rows = source zones (or the zone/node ``src``), columns = every
    service of every destination host (or of the zone/node ``dst``) plus ICMP echo."""
    ix = index or ReachIndex(topo)
    kind, sources = _select(topo, src, "--from")
    _, dests = _select(topo, dst, "--to")
    rows: list[MatrixRow] = []
    if kind == "node":
        n = sources[0]
        rows.append(MatrixRow(n.name, "node", {ix.src_class(n): 1}, {n.name}))
    else:
        by_zone: dict[str, MatrixRow] = {}
        for n in sources:
            z = n.interfaces[0].zone
            row = by_zone.get(z)
            if row is None:
                row = by_zone[z] = MatrixRow(z, "zone", Counter(), set())
            row.members[ix.src_class(n)] += 1
            row.hosts.add(n.name)
        rows = [by_zone[z] for z in topo.zones if z in by_zone]
    columns = []
    for n in dests:
        cls = ix.addr_class(n.ip)
        zone = n.interfaces[0].zone
        columns.append(MatrixColumn(n.name, zone, "icmp", "icmp", None, cls))
        for s in n.services:
            columns.append(MatrixColumn(n.name, zone, s.type, s.proto, s.port, cls))
    in_rows = {h for r in rows for h in r.hosts}
    self_cls = {n.name: ix.src_class(n) for n in dests if n.name in in_rows}
    cells = []
    for row in rows:
        out = []
        memo: dict[tuple, tuple[int, int, str]] = {}
        for col in columns:
            key = (col.dst_cls, col.proto, col.port)
            cell = memo.get(key)
            if cell is None:
                ok = total = 0
                why = ""
                for cls, count in row.members.items():
                    v, reason = ix.verdict(cls, col.dst_cls, col.proto, col.port)
                    total += count
                    ok += count if v else 0
                    if not why or (v is False and ok == 0):
                        why = reason
                cell = memo[key] = (ok, total, why)
            if col.node in row.hosts:       # a host's own services: leave the host itself out
                cls = self_cls[col.node]
                v, _ = ix.verdict(cls, col.dst_cls, col.proto, col.port)
                cell = (cell[0] - (1 if v else 0), cell[1] - 1, cell[2])
            out.append(cell)
        cells.append(out)
    return ReachMatrix(rows, columns, cells)
