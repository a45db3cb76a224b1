"""Interop: export the model as GraphML; the containerlab import lives in
:mod:`cyberrange.model.clab` (its names are re-exported here for old callers)."""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from cyberrange.model.clab import (
    KIND_MAP,
    ClabImport,
    clab_kind,
    convert_clab,
    import_clab,
)
from cyberrange.model.topology import Topology

__all__ = ["KIND_MAP", "ClabImport", "clab_kind", "convert_clab", "export_graphml", "import_clab",
           "to_graph"]


# -- GraphML --------------------------------------------------------------------------------
def to_graph(topo: Topology) -> nx.Graph:
    """The model as one graph: a node per topology node and per zone (``zone:NAME``), an edge
    per interface (node - zone) carrying the interface address and the link profile."""
    g = nx.Graph(name=topo.name, classification=topo.classification)
    for z in topo.zones.values():
        g.add_node(f"zone:{z.name}", kind="zone", role="link" if z.p2p else "zone", zone=z.name,
                   ip=str(z.subnet), classification=z.classification,
                   vlan=z.vlan if z.vlan is not None else -1, description=z.description)
    for n in topo.nodes.values():
        g.add_node(n.name, kind=n.kind, role=n.role,
                   zone=",".join(i.zone for i in n.interfaces), ip=str(n.ip) if n.interfaces else "",
                   classification=n.classification or topo.classification,
                   services=",".join(f"{s.type}/{s.proto}/{s.port}" for s in n.services),
                   software=",".join(f"{s.name} {s.version}" for s in n.software),
                   crown_jewel=n.name in topo.crown_jewels, entry_point=n.name in topo.entry_points)
        for i in n.interfaces:
            p = i.profile or topo.zones[i.zone].profile
            g.add_edge(n.name, f"zone:{i.zone}", ip=str(i.ip), interface=i.devname,
                       profile=p.name if p else "",
                       bandwidth_mbit=float(p.bandwidth_mbit or 0) if p else 0.0,
                       delay_ms=float(p.delay_ms) if p else 0.0,
                       jitter_ms=float(p.jitter_ms) if p else 0.0,
                       loss_pct=float(p.loss_pct) if p else 0.0)
    return g


def export_graphml(topo: Topology, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(to_graph(topo), out)
    return out
