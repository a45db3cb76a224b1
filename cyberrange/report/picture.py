"""Pictures of a topology: a rich Tree for the terminal and a network drawing (SVG or PNG).

The drawing is networkx + matplotlib (Agg, no display needed). Layout: the *skeleton* (routers,
firewalls and zones, with point-to-point links as router-router edges) is laid out with
a seeded spring layout, which keeps the few dozen skeleton nodes apart; each zone's hosts are then fanned
out on an arc on the far side of their zone from its routers, so the hosts never sit on a link.
A zone with more than ``MAX_HOSTS_DRAWN`` hosts is drawn as one box "N hosts".

Encoding: fill colour = zone; outline colour = classification (the usual banner colours);
shape = kind (circle host, square router, hexagon firewall, rounded box zone); a gold star =
crown jewel; a red triangle = entry point; an eye (◉) beside a zone = sensor on it. Point-to-point
links carry their name and profile; a zone's label gives its subnet, VLAN and profile.
"""
from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
from rich.tree import Tree

from cyberrange.errors import UserError
from cyberrange.model.topology import Topology

CLASS_COLOURS = {
    "UNCLASSIFIED": "#007a33", "RESTRICTED": "#6f2da8", "CONFIDENTIAL": "#0033a0",
    "SECRET": "#c8102e", "TOP SECRET": "#ff8c00",
}
RICH_CLASS = {"UNCLASSIFIED": "green", "RESTRICTED": "magenta", "CONFIDENTIAL": "blue",
              "SECRET": "red", "TOP SECRET": "dark_orange"}
MAX_HOSTS_DRAWN = 16


def _sensors_by_zone(topo: Topology) -> dict[str, list[str]]:
    sensors: dict[str, list[str]] = {}
    for s in topo.sensors.values():
        sensors.setdefault(s.zone, []).append(s.name)
    return sensors


# -- terminal tree -------------------------------------------------------------------------
def _svc(s) -> str:
    return f"{s.type} {s.proto}/{s.port}"


def topology_tree(topo: Topology) -> Tree:
    """topology -> zones (subnet, classification, VLAN) -> nodes; then routers and links."""
    cls = RICH_CLASS.get(topo.classification, "white")
    root = Tree(f"[bold]{topo.name}[/] [{cls}]{topo.classification}[/]"
                + (f" — {topo.description}" if topo.description else ""))
    jewels, entries = set(topo.crown_jewels), set(topo.entry_points)
    sensors = _sensors_by_zone(topo)
    zones = root.add("[bold]zones[/]")
    for z in topo.zones.values():
        if z.p2p:
            continue
        c = RICH_CLASS.get(z.classification, "white")
        extra = [f"vlan {z.vlan}"] if z.vlan is not None else []
        if z.switch:
            extra.append(f"switch {z.switch}")
        if z.profile:
            extra.append(f"profile {z.profile.name}")
        eye = "".join(f" 👁 {n}" for n in sensors.get(z.name, []))
        zt = zones.add(f"[bold]{z.name}[/] {z.subnet} [{c}]{z.classification}[/]"
                       + (f" ({', '.join(extra)})" if extra else "") + eye
                       + (f" [dim]{z.description}[/]" if z.description else ""))
        for n, i in topo.members(z.name):
            if n.is_router:
                zt.add(f"[cyan]{n.kind} {n.name}[/] {i.ip} ({i.devname})")
                continue
            marks = ("★ crown jewel " if n.name in jewels else "") + ("⚑ entry point " if n.name in entries else "")
            label = f"{marks}[bold]{n.name}[/] {n.role} {i.ip}"
            if n.classification and n.classification != z.classification:
                label += f" [{RICH_CLASS.get(n.classification, 'white')}]{n.classification}[/]"
            nt = zt.add(label)
            if n.services:
                nt.add("services: " + ", ".join(_svc(s) for s in n.services))
            if n.software:
                nt.add("software: " + ", ".join(f"{s.name} {s.version}" for s in n.software))
    routers = root.add("[bold]routers and firewalls[/]")
    for r in topo.routers:
        extra = f", {len(r.rules)} rules, default {r.default_action}" if r.filters else ""
        rt = routers.add(f"[cyan]{r.kind}[/] [bold]{r.name}[/]{extra}")
        for i in r.interfaces:
            rt.add(f"{i.devname} {i.cidr} → {i.zone}")
    if topo.links:
        links = root.add("[bold]links[/]")
        for l in topo.links.values():
            p = l.profile
            shape = ""
            if p:
                parts = [f"{p.bandwidth_mbit:g} Mbit/s" if p.bandwidth_mbit else "",
                         f"{p.delay_ms:g} ms" if p.delay_ms else "",
                         f"±{p.jitter_ms:g} ms" if p.jitter_ms else "",
                         f"{p.loss_pct:g}% loss" if p.loss_pct else ""]
                shape = f" {p.name}: " + ", ".join(x for x in parts if x)
            links.add(f"[bold]{l.name}[/] {l.a} ⇄ {l.b} {l.subnet}{shape}")
    if topo.missions:
        ms = root.add("[bold]mission threads[/]")
        for m in topo.missions.values():
            what = m.proto + (f"/{m.port}" if m.port else "")
            ms.add(f"{m.name}: {', '.join(m.src)} → {', '.join(m.dst)} {what}")
    return root


# -- drawing ------------------------------------------------------------------------------
def _zone_colours(topo: Topology) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    names = [z for z in topo.zones if not topo.zones[z].p2p]
    return {z: cmap((2 * k) % 20 / 20 + (1 / 40 if (2 * k) // 20 % 2 else 0))
            for k, z in enumerate(names)}


def layout(topo: Topology) -> tuple[nx.Graph, dict]:
    """The drawing graph and node positions (see the module docstring)."""
    g = nx.Graph()
    skel = nx.Graph()
    for z in topo.zones.values():
        if not z.p2p:
            g.add_node(("zone", z.name), kind="zone", zone=z.name)
            skel.add_node(("zone", z.name))
    for r in topo.routers:
        g.add_node(r.name, kind=r.kind, zone=None)
        skel.add_node(r.name)
        for i in r.interfaces:
            z = topo.zones[i.zone]
            if not z.p2p:
                g.add_edge(r.name, ("zone", z.name), kind="attach")
                skel.add_edge(r.name, ("zone", z.name))
    for l in topo.links.values():
        g.add_edge(l.a, l.b, kind="link", label=f"{l.name}\n{l.profile.name if l.profile else ''}")
        skel.add_edge(l.a, l.b, weight=1.6)
    pos = nx.spring_layout(skel, seed=3, iterations=300, k=1.2 / math.sqrt(max(len(skel), 1)))
    # fan each zone's hosts out, away from the centre of its routers
    radius = 0.2 * _scale(pos) if len(pos) > 1 else 1.0
    for z in topo.zones.values():
        if z.p2p:
            continue
        zn = ("zone", z.name)
        hosts = sorted((n for n, _ in topo.members(z.name) if not n.is_router),
                       key=lambda n: n.interfaces[0].zone != z.name)   # primary zone first
        zx, zy = pos[zn]
        rs = [pos[r] for r in skel.neighbors(zn)]
        if rs:
            ax, ay = (sum(p[0] for p in rs) / len(rs), sum(p[1] for p in rs) / len(rs))
            angle = math.atan2(zy - ay, zx - ax)
        else:
            angle = math.atan2(zy, zx) if (zx or zy) else 0.0
        g.nodes[zn]["away"] = angle
        if not hosts:
            continue
        if len(hosts) > MAX_HOSTS_DRAWN:
            hn = ("hosts", z.name)
            g.add_node(hn, kind="hostgroup", zone=z.name, count=len(hosts), angle=angle)
            g.add_edge(hn, zn, kind="member")
            pos[hn] = (zx + radius * math.cos(angle), zy + radius * math.sin(angle))
            continue
        for h in [h for h in hosts if h.name in g]:     # a host on several zones: drawn once,
            g.add_edge(h.name, zn, kind="member")           # at its first zone, linked to all
        hosts = [h for h in hosts if h.name not in g]
        n = len(hosts)
        spread = min(math.pi * 1.3, 0.55 * (n - 1)) if n > 1 else 0
        for k, h in enumerate(hosts):
            a = angle - spread / 2 + (spread * k / (n - 1) if n > 1 else 0)
            g.add_node(h.name, kind="host", zone=z.name, angle=a)
            g.add_edge(h.name, zn, kind="member")
            pos[h.name] = (zx + radius * math.cos(a), zy + radius * math.sin(a))
    return g, pos


def draw(topo: Topology, out, title: str | None = None) -> Path:
    """Draw ``topo`` to ``out`` (.svg or .png)."""
    out = Path(out)
    if out.suffix.lower() not in (".svg", ".png"):
        raise UserError(f"{out}: the picture must be .svg or .png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"       # SVG text stays text (searchable, small)

    g, pos = layout(topo)
    size = max(11.0, min(40.0, 3.2 * math.sqrt(g.number_of_nodes())))
    fig, ax = plt.subplots(figsize=(size, size * 0.72))
    ax.set_axis_off()
    drawing = _Drawing(topo, g, pos, ax)
    drawing.edges()
    drawing.nodes()
    drawing.labels()
    drawing.marks()
    drawing.legend()
    ax.set_title(title or f"{topo.name} ({topo.classification})" +
                 (f"\n{topo.description}" if topo.description else ""), fontsize=11)
    ax.margins(0.12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110 if out.suffix.lower() == ".png" else None, bbox_inches="tight")
    plt.close(fig)
    return out


NODE_SHAPES = {"host": ("o", 700), "router": ("s", 1100), "firewall": ("h", 1500),
               "zone": ("o", 2600), "hostgroup": ("o", 1800)}       # kind -> marker, size


class _Drawing:
    """``topo`` drawn on the axes ``ax`` from the graph and positions of ``layout``: one method
    a layer, called in this order (what is drawn later lies on top)."""

    def __init__(self, topo: Topology, g: nx.Graph, pos: dict, ax):
        self.topo, self.g, self.pos, self.ax = topo, g, pos, ax
        self.sc = _scale(pos)
        self.colours = _zone_colours(topo)

    def classification(self, n) -> str:
        kind = self.g.nodes[n]["kind"]
        if kind in ("zone", "hostgroup"):
            return self.topo.zones[self.g.nodes[n]["zone"]].classification
        return self.topo.nodes[n].classification or self.topo.classification

    def fill(self, n):
        z = self.g.nodes[n]["zone"]
        return self.colours.get(z, "#dddddd") if z else "#e8e8e8"

    def edges(self) -> None:
        """Zone attachments and members thin and grey, point-to-point links dashed with their
        name and profile."""
        g, pos, ax = self.g, self.pos, self.ax
        attach = [(a, b) for a, b, d in g.edges(data=True) if d["kind"] in ("attach", "member")]
        nx.draw_networkx_edges(g, pos, edgelist=attach, ax=ax, edge_color="#999999", width=1.0)
        links = [(a, b) for a, b, d in g.edges(data=True) if d["kind"] == "link"]
        nx.draw_networkx_edges(g, pos, edgelist=links, ax=ax, edge_color="#444444", width=2.6,
                               style="dashed")
        nx.draw_networkx_edge_labels(g, pos,
                                     edge_labels={(a, b): g.edges[a, b]["label"] for a, b in links},
                                     ax=ax, font_size=8, rotate=False,
                                     bbox={"boxstyle": "round", "fc": "white", "ec": "#444444"})

    def nodes(self) -> None:
        """Shape = kind, fill = zone, outline = classification."""
        g = self.g
        for kind, (marker, sz) in NODE_SHAPES.items():
            ns = [n for n in g if g.nodes[n]["kind"] == kind]
            if not ns:
                continue
            nx.draw_networkx_nodes(
                g, self.pos, nodelist=ns, ax=self.ax, node_shape=marker, node_size=sz,
                node_color=[self.fill(n) for n in ns], alpha=0.55 if kind == "zone" else 1.0,
                edgecolors=[CLASS_COLOURS.get(self.classification(n), "black") for n in ns],
                linewidths=3.0 if kind != "zone" else 2.0)

    def label_text(self, n) -> str:
        kind = self.g.nodes[n]["kind"]
        if kind == "zone":
            z = self.topo.zones[n[1]]
            bits = [z.name, str(z.subnet)]
            if z.vlan is not None:
                bits.append(f"vlan {z.vlan}")
            if z.profile:
                bits.append(z.profile.name)
            return "\n".join(bits)
        if kind == "hostgroup":
            return f"{self.g.nodes[n]['count']} hosts"
        if kind == "host":
            node = self.topo.nodes[n]
            svc = ",".join(f"{s.type}/{s.port}" for s in node.services)
            return f"{n}\n{node.ip}" + (f"\n{svc}" if svc else "")
        return n

    def labels(self) -> None:
        """A host's label outside it, along the direction it was fanned out in; any other
        node's label on it."""
        texts = {n: self.label_text(n) for n in self.g}
        for n, text in texts.items():
            x, y = self.pos[n]
            kind = self.g.nodes[n]["kind"]
            if kind == "host":
                a = self.g.nodes[n]["angle"]
                c, si = math.cos(a), math.sin(a)
                x, y = x + 0.035 * self.sc * c, y + 0.035 * self.sc * si
                ha = "left" if c > 0.3 else "right" if c < -0.3 else "center"
                va = "bottom" if si > 0.3 else "top" if si < -0.3 else "center"
                self.ax.text(x, y, text, fontsize=7.5, ha=ha, va=va,
                             bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                   "alpha": 0.8})
            else:
                self.ax.text(x, y, text, fontsize=8.5, ha="center", va="center",
                             fontweight="bold" if kind in ("zone", "router", "firewall")
                             else "normal")

    def marks(self) -> None:
        """Crown jewels, entry points, sensors."""
        pos, ax, sc = self.pos, self.ax, self.sc
        jewels = [n for n in self.topo.crown_jewels if n in pos]
        if jewels:
            ax.scatter([pos[n][0] for n in jewels], [pos[n][1] for n in jewels], marker="*",
                       s=520, c="gold", edgecolors="black", linewidths=1.0, zorder=5)
        entries = [n for n in self.topo.entry_points if n in pos]
        if entries:
            ax.scatter([pos[n][0] for n in entries], [pos[n][1] for n in entries], marker="^",
                       s=260, c="#d62728", edgecolors="black", linewidths=1.0, zorder=5)
        for zname, names in _sensors_by_zone(self.topo).items():
            zn = ("zone", zname)
            if zn in pos:
                # beside the zone, on the side of its routers (the hosts fan out on the other side)
                a = self.g.nodes[zn].get("away", 0.0) + math.pi * 0.75
                x, y = pos[zn][0] + 0.075 * sc * math.cos(a), pos[zn][1] + 0.075 * sc * math.sin(a)
                ax.scatter([x], [y], marker="o", s=220, c="white", edgecolors="black", zorder=6)
                ax.scatter([x], [y], marker="o", s=60, c="black", zorder=7)
                ax.text(x, y - 0.02 * sc, ", ".join(names), fontsize=7, ha="center", va="top",
                        style="italic", bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                              "ec": "none", "alpha": 0.8})

    def legend(self) -> None:
        """Classifications present, kinds, marks, zones."""
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker="o", ls="", mfc="white", mec=c, mew=3, ms=11, label=k)
                   for k, c in CLASS_COLOURS.items()
                   if any(self.classification(n) == k for n in self.g)]
        handles += [Line2D([], [], marker=m, ls="", mfc="#e8e8e8", mec="black", ms=11, label=lbl)
                    for m, lbl in (("o", "host"), ("s", "router"), ("h", "firewall"))]
        handles += [Line2D([], [], marker="*", ls="", mfc="gold", mec="black", ms=16,
                           label="crown jewel"),
                    Line2D([], [], marker="^", ls="", mfc="#d62728", mec="black", ms=11,
                           label="entry point"),
                    Line2D([], [], marker="o", ls="", mfc="black", mec="black", ms=6,
                           label="sensor"),
                    Line2D([], [], color="#444444", ls="--", lw=2.5, label="point-to-point link")]
        handles += [Line2D([], [], marker="o", ls="", mfc=c, mec="none", ms=11, label=f"zone {z}")
                    for z, c in self.colours.items()]
        self.ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                       title="outline = classification", title_fontsize=8, frameon=True)


def _scale(pos) -> float:
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    return max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
