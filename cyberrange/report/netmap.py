"""The network picture of a run: the topology drawing of ``picture.py`` (same layout, shapes and
colours as ``topo draw``) with the drill drawn on top, as SVG text to put inline in a page.

On top: the attack path (a red arrow from the actor to every node a focused step aimed at,
labelled with the step), nodes only a broad step (a sweep over a subnet) touched as thin orange
rings, the actors as thick red rings, compromised nodes as a red cross, and the blue team's
containment: nodes it isolated as a thick blue dashed ring, nodes whose traffic it blocked as a
violet ring. Every mark carries an SVG id (``cr-<mark>-<node>``) so a test or a script can find it.
"""
from __future__ import annotations

import io
import math
import re

from cyberrange.report import picture

ATTACK = "#d62728"
PROBED = "#555555"
ISOLATED = "#1f5fbf"
BLOCKED = "#8e44ad"
OUTCOME_ARROW = {"succeeded": ATTACK, "blocked": BLOCKED, "failed": "#b8860b"}


def _anchor(topo, g, pos, name):
    """Where node ``name`` is drawn: itself, or the "N hosts" box of its zone."""
    if name in pos:
        return pos[name]
    node = topo.nodes.get(name)
    if node is not None and node.interfaces:
        key = ("hosts", node.interfaces[0].zone)
        if key in pos:
            return pos[key]
    return None


class _Marks:
    """The drill's marks on the picture's axes (drawn after the picture's own layers)."""

    def __init__(self, topo, g, pos, ax, marks: dict):
        self.topo, self.g, self.pos, self.ax, self.m = topo, g, pos, ax, marks
        self.sc = picture._scale(pos)

    def at(self, name):
        return _anchor(self.topo, self.g, self.pos, name)

    def ring(self, name, gid, colour, size, width, style="solid", zorder=8):
        p = self.at(name)
        if p is None:
            return
        self.ax.scatter([p[0]], [p[1]], s=size, facecolors="none", edgecolors=colour,
                        linewidths=width, linestyles=style, zorder=zorder, gid=f"cr-{gid}-{name}")

    def tag(self, name, text, colour, gid):
        """A word beside a node, on the side away from its label (a host's label lies along the
        angle it was fanned out at, so the word goes back towards its zone)."""
        p = self.at(name)
        if p is None:
            return
        a = self.g.nodes[name].get("angle") if name in self.g else None
        a = a + math.pi if a is not None else -math.pi / 2
        x, y = p[0] + 0.05 * self.sc * math.cos(a), p[1] + 0.05 * self.sc * math.sin(a)
        self.ax.text(x, y, text, fontsize=7.5, fontweight="bold",
                     color="white", ha="center", va="center", zorder=12, gid=f"cr-{gid}-{name}",
                     bbox={"boxstyle": "round,pad=0.2", "fc": colour, "ec": "none"})

    def draw(self) -> None:
        m = self.m
        for n in m["probed"]:
            self.ring(n, "probed", PROBED, 1300, 1.6, style="dotted")
        for src, dst, step, outcome in m["arrows"]:
            self.arrow(src, dst, step, OUTCOME_ARROW.get(outcome, "#777777"))
        for n in m["actors"]:
            self.ring(n, "actor", ATTACK, 1700, 4.0, zorder=9)
        for n in m["compromised"]:
            p = self.at(n)
            if p is not None:
                self.ax.scatter([p[0]], [p[1]], marker="X", s=260, c=ATTACK,
                                edgecolors="white", linewidths=1.2, zorder=11,
                                gid=f"cr-compromised-{n}")
        for n in m["blocked"]:
            self.ring(n, "blocked", BLOCKED, 2300, 3.0, zorder=10)
        for n in m["isolated"]:
            self.ring(n, "isolated", ISOLATED, 2900, 4.5, style="dashed", zorder=10)
            self.tag(n, "isolated", ISOLATED, "isolated-tag")

    def arrow(self, src, dst, step, colour) -> None:
        a, b = self.at(src), self.at(dst)
        # positions are numpy arrays: compare them element-wise (``a == b`` is an array)
        if a is None or b is None or (float(a[0]), float(a[1])) == (float(b[0]), float(b[1])):
            return
        self.ax.annotate("", xy=b, xytext=a, zorder=7, gid=f"cr-path-{src}-{dst}",
                         arrowprops={"arrowstyle": "-|>,head_length=0.7,head_width=0.35",
                                     "color": colour, "lw": 2.4, "alpha": 0.85,
                                     "shrinkA": 16, "shrinkB": 16,
                                     "connectionstyle": "arc3,rad=0.18"})
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        # the label sits off the chord, on the side the arc bends to
        dx, dy = b[0] - a[0], b[1] - a[1]
        d = math.hypot(dx, dy) or 1.0
        off = 0.09 * d
        self.ax.text(mx + dy / d * off, my - dx / d * off, step, fontsize=7, color=colour,
                     ha="center", va="center", zorder=12, gid=f"cr-path-label-{src}-{dst}",
                     bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": colour,
                           "lw": 0.8, "alpha": 0.9})

    def legend(self, first) -> None:
        from matplotlib.lines import Line2D
        m = self.m
        items = [(bool(m["actors"]), Line2D([], [], marker="o", ls="", mfc="none", mec=ATTACK,
                                            mew=3, ms=14, label="attacker")),
                 (bool(m["arrows"]), Line2D([], [], color=ATTACK, lw=2.4,
                                            label="attack path (step)")),
                 (bool(m["probed"]), Line2D([], [], marker="o", ls="", mfc="none", mec=PROBED,
                                            mew=1.6, ms=13, label="probed by a sweep/scan")),
                 (bool(m["compromised"]), Line2D([], [], marker="X", ls="", mfc=ATTACK,
                                                 mec="white", ms=12, label="compromised")),
                 (bool(m["isolated"]), Line2D([], [], marker="o", ls="", mfc="none",
                                              mec=ISOLATED, mew=3, ms=15,
                                              label="isolated by blue")),
                 (bool(m["blocked"]), Line2D([], [], marker="o", ls="", mfc="none", mec=BLOCKED,
                                             mew=3, ms=14, label="blocked by blue"))]
        handles = [h for show, h in items if show]
        if not handles:
            return
        if first is not None:
            self.ax.add_artist(first)
        self.ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(1.0, 0.0),
                       fontsize=8, title="drill", title_fontsize=8, frameon=True)


def svg(topo, marks: dict, title: str | None = None, salt: str = "cyberrange") -> str:
    """The picture with the drill's marks, as an ``<svg>`` element (no XML prolog, width 100%)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        g, pos = picture.layout(topo)
        size = max(11.0, min(40.0, 3.2 * math.sqrt(g.number_of_nodes())))
        fig, ax = plt.subplots(figsize=(size, size * 0.72))
        try:
            ax.set_axis_off()
            drawing = picture._Drawing(topo, g, pos, ax)
            drawing.edges()
            drawing.nodes()
            drawing.labels()
            drawing.marks()
            drawing.legend()
            overlay = _Marks(topo, g, pos, ax, marks)
            overlay.draw()
            overlay.legend(ax.get_legend())
            ax.set_title(title or f"{topo.name} ({topo.classification})", fontsize=11)
            ax.margins(0.12)
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", bbox_inches="tight")
        finally:
            plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # creator, date
    # scale with the page: drop the fixed size, keep the viewBox
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
                  r'<svg\1 class="cr-netmap" width="100%" role="img" '
                  r'aria-label="network picture"', text, count=1)
