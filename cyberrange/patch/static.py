"""Static validation of a change set: the topology before and after, compared with the model's
own analyses (no root, nothing boots).

- reachability: the matrix of ``topo reach`` (source zones x every service of every host, plus
  ICMP) before and after; each cell that changes is *opened* or *closed*, grouped by zone pair
  and service;
- attack paths: the attack graph of ``topo paths``; an edge that the change adds on a path from
  an entry point to a crown jewel is a new path, and each jewel's best path is compared;
- lint: findings of ``topo check`` that the change brings;
- mission threads: still allowed by the firewalls AND still served (a service listens on the
  mission's port);
- services that moved port: every zone that reached the old port must reach the new one;
- the change set's ``expect``: flows it closes or opens.

Every check is a :class:`Check` (pass / fail / warn with a reason); the verdict is FAIL when a
check fails, PASS otherwise (``patch/verdict.py`` renders it).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import networkx as nx

from cyberrange.errors import UserError
from cyberrange.model.lint import lint
from cyberrange.model.loader import load_topology
from cyberrange.model.paths import SRC, attack_graph, attack_paths
from cyberrange.model.reach import ReachIndex, reach_matrix
from cyberrange.model.topology import Topology
from cyberrange.patch.changeset import ChangeSet

_FLOW = re.compile(r"^\s*(?P<src>[^>]+?)\s*->\s*(?P<dst>[^\s,][^>]*?)"
                   r"\s+(?:(?P<proto>tcp|udp)/(?P<port>\d+)|(?P<icmp>icmp))\s*$")
_NUMBERS = re.compile(r"\b(rule|line|lines) \d+")


@dataclass
class Check:
    name: str                     # "mission cop", "crown jewel c2-server", "expect closed ..."
    group: str                    # missions | crown-jewels | expect | lint | services | effect
    status: str                   # pass | fail | warn
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "group": self.group, "status": self.status,
                "reason": self.reason}


@dataclass
class CellChange:
    src_zone: str
    dst_node: str
    dst_zone: str
    service: str                  # "login tcp/22", "icmp"
    before: str                   # allow | deny | partial | absent
    after: str
    why: str                      # the reason of the after verdict (or the before one)

    @property
    def kind(self) -> str:
        rank = {"absent": 0, "deny": 0, "self": 0, "partial": 1, "allow": 2}
        return "opened" if rank[self.after] > rank[self.before] else "closed"

    def to_json(self) -> dict:
        return {"from": self.src_zone, "to": self.dst_node, "to_zone": self.dst_zone,
                "service": self.service, "before": self.before, "after": self.after,
                "change": self.kind, "why": self.why}


@dataclass
class StaticResult:
    topology: str
    change: ChangeSet
    before: Topology
    after: Topology
    cells: list[CellChange]
    cells_total: int
    paths_before: list
    paths_after: list
    new_findings: list
    gone_findings: list
    checks: list[Check] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "FAIL" if any(c.status == "fail" for c in self.checks) else "PASS"

    def groups(self) -> list[dict]:
        """Changed cells grouped by (source zone, destination zone, service, change)."""
        out: dict[tuple, dict] = {}
        for c in self.cells:
            key = (c.src_zone, c.dst_zone, c.service.split()[-1], c.kind)
            g = out.setdefault(key, {"from": key[0], "to_zone": key[1], "service": key[2],
                                     "change": key[3], "nodes": []})
            g["nodes"].append(c.dst_node)
        return list(out.values())


# -- reachability -----------------------------------------------------------------------------
def _svc(col) -> str:
    return "icmp" if col.proto == "icmp" else f"{col.service} {col.proto}/{col.port}"


def matrix_diff(before: Topology, after: Topology, ix_b: ReachIndex, ix_a: ReachIndex,
                matrices: tuple | None = None) -> tuple[list[CellChange], int]:
    """Every cell whose verdict the change moves (new and removed services and zones count as
    ``absent`` on the side that lacks them), and the number of cells compared. Cells are
    matched by (source zone, destination host, service) without copying the matrices."""
    m_b, m_a = matrices or (reach_matrix(before, index=ix_b), reach_matrix(after, index=ix_a))
    rows_b = {r.name: k for k, r in enumerate(m_b.rows)}
    rows_a = {r.name: k for k, r in enumerate(m_a.rows)}
    cols_b = {(c.node, c.proto, c.port, c.service): k for k, c in enumerate(m_b.columns)}
    cols_a = {(c.node, c.proto, c.port, c.service): k for k, c in enumerate(m_a.columns)}
    absent = ("absent", None, "")
    out = []
    rows = list(dict.fromkeys([*rows_b, *rows_a]))
    cols = list(dict.fromkeys([*cols_b, *cols_a]))
    for r in rows:
        rb, ra = rows_b.get(r), rows_a.get(r)
        for c in cols:
            cb, ca = cols_b.get(c), cols_a.get(c)
            b = m_b.cells[rb][cb] if rb is not None and cb is not None else None
            a = m_a.cells[ra][ca] if ra is not None and ca is not None else None
            if b is not None and a is not None and b[:2] == a[:2]:
                continue
            sb = (m_b.state(b), m_b.columns[cb].zone, b[2]) if b is not None else absent
            sa = (m_a.state(a), m_a.columns[ca].zone, a[2]) if a is not None else absent
            if sb[0] == sa[0] or {sb[0], sa[0]} <= {"absent", "deny", "self"}:
                continue
            col = m_a.columns[ca] if ca is not None else m_b.columns[cb]
            out.append(CellChange(r, c[0], sa[1] or sb[1], _svc(col), sb[0], sa[0],
                                  sa[2] or sb[2]))
    out.sort(key=lambda x: (x.src_zone, x.dst_node, x.service))
    return out, len(rows) * len(cols)


# -- flows (expect, missions) -----------------------------------------------------------------
def _expand(topo: Topology, side: str, what: str) -> list[str]:
    hosts = [h.name for h in topo.hosts]
    out = []
    for pat in (p.strip() for p in side.split(",")):
        if pat in topo.nodes:
            out.append(pat)
        elif pat in topo.zones:
            out += [h.name for h in topo.hosts if any(i.zone == pat for i in h.interfaces)]
        elif any(c in pat for c in "*?["):
            out += fnmatch.filter(hosts, pat)
        else:
            raise UserError(f"{what}: unknown node or zone '{pat}'")
    return list(dict.fromkeys(out))


def flow_pairs(topo: Topology, flow: str, what: str):
    m = _FLOW.match(flow)
    if not m:
        raise UserError(f"{what}: cannot read '{flow}'; write 'SRC -> DST tcp/PORT' "
                        f"(or udp/PORT, icmp)")
    proto, port = ("icmp", None) if m["icmp"] else (m["proto"], int(m["port"]))
    return _expand(topo, m["src"], what), _expand(topo, m["dst"], what), proto, port


def flow_state(topo: Topology, ix: ReachIndex, flow: str, what: str) -> tuple[int, int, str]:
    """(allowed pairs, pairs, an example reason) for a flow written as a mission thread."""
    srcs, dsts, proto, port = flow_pairs(topo, flow, what)
    ok = total = 0
    why = ""
    for s in srcs:
        for d in dsts:
            if s == d:
                continue
            v, reason = ix.check(s, topo.nodes[d].ip, proto, port)
            total += 1
            ok += v
            if not why or (not v and ok == 0) or (v and ok == total):
                why = reason
    return ok, total, why


def _served(topo: Topology, node: str, proto: str, port) -> bool:
    return proto == "icmp" or any(s.proto == proto and s.port == port
                                  for s in topo.nodes[node].services)


# -- attack paths -----------------------------------------------------------------------------
def _label(g: nx.DiGraph, n) -> str:
    if isinstance(n, tuple):
        members = sorted(p for p in g.predecessors(n))
        return f"[{members[0]} +{len(members) - 1}]" if len(members) > 1 else members[0]
    return n


def jewel_edges(topo: Topology, g: nx.DiGraph) -> dict[str, set[tuple]]:
    """Per crown jewel, the service edges on some path from an entry point to it."""
    g = g.copy()
    for s in topo.entry_points:
        g.add_edge(SRC, s)
    from_entry = nx.descendants(g, SRC) | {SRC} if topo.entry_points else set()
    out = {}
    for j in topo.crown_jewels:
        to_jewel = nx.ancestors(g, j) | {j}
        out[j] = {(_label(g, u), _label(g, v), d.get("service", ""))
                  for u, v, d in g.edges(data=True)
                  if u in from_entry and v in to_jewel and u != SRC and d.get("service")}
    return out


def _best(topo, g, jewel) -> int | None:
    if not topo.entry_points:
        return None
    p = attack_paths(topo, targets=[jewel], k=1, graph=g)
    return p[0].weight if p else None


# -- checks -----------------------------------------------------------------------------------
def _key(f) -> tuple:
    """A finding's identity across before and after: its code, the position of the element it
    is about (positions of the topology's own elements do not move; what the change brings in
    is positioned in the change set), and its message with rule and line numbers left out
    (an inserted rule renumbers the later ones)."""
    where = (f.ref.file, f.ref.line) if f.ref else ("", 0)
    return (f.code, *where, _NUMBERS.sub(r"\1 N", f.message))


def static_validate(topology_path, cs: ChangeSet, k: int = 5,
                    detectors_dir="detectors") -> StaticResult:
    import time
    t = {}
    t0 = time.perf_counter()
    detector_checks = _detector_checks(cs, detectors_dir)
    before = load_topology(topology_path)
    after = load_topology(topology_path, change=cs)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix_b, ix_a = ReachIndex(before), ReachIndex(after)
    matrices = (reach_matrix(before, index=ix_b), reach_matrix(after, index=ix_a))
    cells, total = matrix_diff(before, after, ix_b, ix_a, matrices)
    t["reachability"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_b, g_a = attack_graph(before, ix_b), attack_graph(after, ix_a)
    paths_b = attack_paths(before, k=k, graph=g_b) if before.entry_points and before.crown_jewels else []
    paths_a = attack_paths(after, k=k, graph=g_a) if after.entry_points and after.crown_jewels else []
    t["paths"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lint_b, lint_a = lint(before, ix_b), lint(after, ix_a)
    keys_b, keys_a = {_key(f) for f in lint_b}, {_key(f) for f in lint_a}
    new = [f for f in lint_a if _key(f) not in keys_b]
    gone = [f for f in lint_b if _key(f) not in keys_a]
    t["lint"] = time.perf_counter() - t0
    res = StaticResult(before.name, cs, before, after, cells, total, paths_b, paths_a, new, gone,
                       timings=t)
    t0 = time.perf_counter()
    res.checks += _expect_checks(cs, before, after, ix_b, ix_a)
    res.checks += _mission_checks(before, after, ix_b, ix_a)
    res.checks += _jewel_checks(before, after, g_b, g_a)
    res.checks += _service_checks(before, after, matrices)
    res.checks += _lint_checks(new)
    res.checks += _behaviour_checks(before, after)
    res.checks += detector_checks
    res.checks.append(_effect_check(res))
    t["checks"] = time.perf_counter() - t0
    return res


def _expect_checks(cs, before, after, ix_b, ix_a) -> list[Check]:
    out = []
    for want, flows in (("closed", cs.expect_closed), ("open", cs.expect_open)):
        for flow in flows:
            what = f"{cs.file}: expect {want} '{flow}'"
            ok_a, n_a, why_a = flow_state(after, ix_a, flow, what)
            ok_b, n_b, _ = flow_state(before, ix_b, flow, what)
            holds = ok_a == 0 if want == "closed" else ok_a == n_a and n_a > 0
            held = ok_b == 0 if want == "closed" else ok_b == n_b and n_b > 0
            state = f"{ok_a}/{n_a} pairs allowed after (before {ok_b}/{n_b})"
            if not holds:
                out.append(Check(f"expect {want}: {flow}", "expect", "fail",
                                 f"not {want}: {state}; e.g. {why_a}"))
            else:
                note = " (it already was before the change)" if held else ""
                out.append(Check(f"expect {want}: {flow}", "expect", "pass",
                                 f"{want}{note}: {state}"))
    return out


def _mission_state(topo, ix, m) -> tuple[int, int, list[str]]:
    ok = total = 0
    unserved = []
    for d in m.dst:
        if d in topo.nodes and not _served(topo, d, m.proto, m.port):
            unserved.append(d)
    for s in m.src:
        for d in m.dst:
            if s == d or s not in topo.nodes or d not in topo.nodes:
                continue
            total += 1
            v, _ = ix.check(s, topo.nodes[d].ip, m.proto, m.port)
            ok += bool(v) and d not in unserved
    return ok, total, unserved


def _mission_checks(before, after, ix_b, ix_a) -> list[Check]:
    out = []
    for name in sorted(set(before.missions) | set(after.missions)):
        if name not in after.missions:
            out.append(Check(f"mission {name}", "missions", "fail",
                             "the change removed the mission thread"))
            continue
        m = after.missions[name]
        what = m.proto + (f"/{m.port}" if m.port else "")
        ok_a, n_a, unserved = _mission_state(after, ix_a, m)
        if name in before.missions:
            ok_b, n_b, _ = _mission_state(before, ix_b, before.missions[name])
        else:
            ok_b, n_b = 0, 0
        if ok_a >= ok_b:
            out.append(Check(f"mission {name}", "missions", "pass",
                             f"{ok_a}/{n_a} pairs work {what} (before {ok_b}/{n_b})"))
            continue
        why = []
        if unserved:
            why.append(f"nothing listens on {what} at {', '.join(unserved)} any more")
        for s in m.src:
            for d in m.dst:
                if s != d and d in after.nodes:
                    v, r = ix_a.check(s, after.nodes[d].ip, m.proto, m.port)
                    if not v:
                        why.append(f"{s} -> {d} {what} is {r}")
                        break
            if len(why) > 1 or (why and not unserved):
                break
        out.append(Check(f"mission {name}", "missions", "fail",
                         f"broken: {ok_a}/{n_a} pairs work (before {ok_b}/{n_b}): "
                         + "; ".join(why)))
    return out


def _jewel_checks(before, after, g_b, g_a) -> list[Check]:
    out = []
    e_b, e_a = jewel_edges(before, g_b), jewel_edges(after, g_a)
    for j in after.crown_jewels:
        new = sorted(e_a.get(j, set()) - e_b.get(j, set()))
        gone = e_b.get(j, set()) - e_a.get(j, set())
        w_b = _best(before, g_b, j) if j in before.nodes else None
        w_a = _best(after, g_a, j)
        weights = f"best path weight {w_b if w_b is not None else '-'} -> " \
                  f"{w_a if w_a is not None else '-'}"
        if new:
            shown = ", ".join(f"{u} -{s}-> {v}" for u, v, s in new[:3])
            more = f" and {len(new) - 3} more" if len(new) > 3 else ""
            out.append(Check(f"crown jewel {j}", "crown-jewels", "fail",
                             f"new attack path(s) to {j}: {len(new)} new edge(s) on paths from "
                             f"the entry points ({shown}{more}); {weights}"))
        elif w_a is not None and (w_b is None or w_a < w_b):
            out.append(Check(f"crown jewel {j}", "crown-jewels", "fail",
                             f"{j} got easier to reach: {weights}"))
        else:
            out.append(Check(f"crown jewel {j}", "crown-jewels", "pass",
                             f"no new path; {len(gone)} edge(s) on paths to it removed; "
                             f"{weights}"))
    return out


def _service_checks(before, after, matrices) -> list[Check]:
    """A service that moved (same node and type, the old port gone, a new one there): every
    source zone that reached the old port must reach the new one."""
    out = []
    zones_b, zones_a = matrices

    def reached(m, node, proto, port):
        col = next((k for k, c in enumerate(m.columns) if c.node == node and c.proto == proto
                    and c.port == port), None)
        if col is None:
            return set()
        return {r.name for r, row in zip(m.rows, m.cells) if row[col][0] > 0}

    for name, nb in before.nodes.items():
        na = after.nodes.get(name)
        if na is None:
            continue
        old = {(s.type, s.proto, s.port) for s in nb.services}
        new = {(s.type, s.proto, s.port) for s in na.services}
        for typ, proto, port in sorted(old - new):
            moved = [x for x in new - old if x[0] == typ]
            if not moved:
                continue
            _, p2, port2 = moved[0]
            was = reached(zones_b, name, proto, port)
            now = reached(zones_a, name, p2, port2)
            lost = sorted(was - now)
            label = f"service {name} {typ} {proto}/{port} -> {p2}/{port2}"
            if lost:
                out.append(Check(label, "services", "fail",
                                 f"the firewall did not follow: {', '.join(lost)} reached "
                                 f"{proto}/{port} but cannot reach {p2}/{port2}"))
            else:
                out.append(Check(label, "services", "pass",
                                 "every zone that reached the old port reaches the new one"))
    return out


def _lint_checks(new) -> list[Check]:
    out = []
    for f in new:
        status = {"error": "fail", "warning": "warn"}.get(f.severity, "pass")
        if f.code == "mission-blocked":
            continue                      # the mission checks say it, with before/after
        out.append(Check(f"lint {f.code} {f.element}", "lint", status,
                         f"new {f.severity}: {f.message} ({f.where})"))
    if not out:
        out.append(Check("lint", "lint", "pass", "no new finding"))
    return out


def _effect_check(res: StaticResult) -> Check:
    """The change must do something that can be seen: an expectation it meets, or a change in
    reachability, in the attack graph, or in what the services and software hold."""
    expects = [c for c in res.checks if c.group == "expect"]
    cells = len(res.cells)
    other = _content_changes(res.before, res.after)
    if expects and all(c.status == "pass" for c in expects):
        why = f"{len(expects)} expectation(s) met"
    elif cells or other:
        why = ""
    else:
        return Check("effect", "effect", "fail",
                     "the change has no visible effect: no reachability cell, service, account, "
                     "software or route differs")
    parts = [why] if why else []
    if cells:
        opened = sum(c.kind == "opened" for c in res.cells)
        parts.append(f"{opened} cell(s) opened, {cells - opened} closed of {res.cells_total}")
    parts += other
    switched = [c.name for c in res.checks if c.group == "behaviours"]
    if switched:
        parts.append(f"{len(switched)} behaviour(s) switched")
    return Check("effect", "effect", "pass", "; ".join(parts))


def _content_changes(before: Topology, after: Topology) -> list[str]:
    out = []
    for name in sorted(set(before.nodes) | set(after.nodes)):
        b, a = before.nodes.get(name), after.nodes.get(name)
        if b is None or a is None:
            out.append(f"node {name} {'added' if b is None else 'removed'}")
            continue
        for what, fb, fa in (
                ("services", [(s.type, s.proto, s.port, s.banner, s.registers, s.writers) for s in b.services],
                 [(s.type, s.proto, s.port, s.banner, s.registers, s.writers) for s in a.services]),
                ("accounts", sorted((s.type, x.user, x.password) for s in b.services
                                    for x in s.accounts),
                 sorted((s.type, x.user, x.password) for s in a.services for x in s.accounts)),
                ("software", [(s.name, str(s.version)) for s in b.software],
                 [(s.name, str(s.version)) for s in a.software]),
                ("routes", sorted(map(str, b.static_routes)), sorted(map(str, a.static_routes)))):
            if fb != fa:
                out.append(f"{name} {what} changed")
    return out


def behaviours_of(topo: Topology) -> dict[tuple[str, str, int], list]:
    """(node, service type, port) -> the catalogue entries (services/behaviours.yaml) in force."""
    from cyberrange.services._behaviours import matching
    return {(n.name, s.type, s.port): matching(n.software, s.type)
            for n in topo.hosts for s in n.services}


def _behaviour_checks(before: Topology, after: Topology) -> list[Check]:
    """A service whose catalogue behaviour the change switches: a pass when it leaves a
    weakness, a fail when it takes one on (a downgrade, or a new service of a weak version)."""
    b, a = behaviours_of(before), behaviours_of(after)
    out = []
    for key in sorted(a):
        ids_b = [x.id for x in b.get(key, [])]
        ids_a = [x.id for x in a[key]]
        if ids_a == ids_b:
            continue
        new_weak = [x.id for x in a[key] if x.weakness and x.id not in ids_b]
        name = f"behaviour {key[0]} {key[1]}/{key[2]}"
        why = f"{', '.join(ids_b) or 'default'} -> {', '.join(ids_a) or 'default'}"
        if new_weak:
            out.append(Check(name, "behaviours", "fail",
                             f"takes on a weakness ({', '.join(new_weak)}): {why}"))
        else:
            out.append(Check(name, "behaviours", "pass", why))
    return out


def _detector_checks(cs: ChangeSet, detectors_dir) -> list[Check]:
    """``set-detector`` operations, checked against the detectors folder (errors point into
    the change set); a detector switched off is a warning: the live run shows what it misses."""
    from cyberrange.patch.files import check_detector_ops, detector_ops
    ops = detector_ops(cs)
    if not ops:
        return []
    check_detector_ops(cs, detectors_dir)
    out = []
    for _, op in ops:
        if op.get("enabled") is False:
            out.append(Check(f"detector {op['detector']}", "detectors", "warn",
                             "switched off: run the live validation to see what it stops "
                             "seeing"))
        else:
            out.append(Check(f"detector {op['detector']}", "detectors", "pass",
                             f"settings changed: {', '.join(sorted(op.get('settings') or {}))}"))
    return out
