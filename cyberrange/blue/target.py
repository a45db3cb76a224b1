"""The twin a blue action acts on: its namespaces, its model and its switch ports.

A defender acts on a twin that is up, from the process that owns it (a drill's automated
response holds the ``Twin``) or from a second terminal (``cyberrange blue ...`` finds it by its
state file, as ``cyberrange exec`` does). :func:`live_twin` turns either into one
:class:`LiveTwin`:

- the namespaces by node name and the switch namespace, from the twin's state;
- the model (``Topology``): the owner's own, or the topology file named in the run's manifest,
  found again and checked against the sha256 recorded when the twin was built (a file edited
  since would describe another network);
- the switch port of every node device, read from the kernel once (the node end of a veth
  names its peer's ifindex in the switch namespace), so that nothing depends on re-deriving
  the builder's numbering.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.twin import netns


class LiveTwin:
    """One twin that is up: what the blue actions need of it."""

    def __init__(self, state, topology):
        self.state = state
        self.topo = topology
        self.prefix: str = state.prefix
        self.ns: dict[str, str] = dict(state.namespaces)
        self.sw_ns: str = state.switch_ns
        self.run_dir = Path(state.run_dir)
        self._sw_links: dict[int, str] | None = None
        self._ports: dict[str, dict[str, str]] = {}

    # -- names --------------------------------------------------------------------------
    def node(self, name: str):
        """The model's node ``name``, or a one-line error with the nearest name."""
        if name not in self.topo.nodes:
            from cyberrange.model.yamlsrc import did_you_mean
            raise UserError(f"unknown node {name!r} in twin {self.prefix} of {self.topo.name}"
                            f"{did_you_mean(name, self.topo.nodes)}")
        return self.topo.nodes[name]

    def ns_of(self, node: str) -> str:
        self.node(node)
        return self.ns[node]

    # -- switch ports ---------------------------------------------------------------------
    def ports(self, node: str) -> dict[str, str]:
        """``{device in the node: switch port}`` for every veth of ``node`` (``eth0``: ``p7``),
        read from the kernel: the node end's ``link_index`` is its peer's ifindex in the
        switch namespace."""
        if node not in self._ports:
            if self._sw_links is None:
                self._sw_links = {d["ifindex"]: d["ifname"] for d in _links(self.sw_ns)}
            self._ports[node] = {d["ifname"]: self._sw_links[d["link_index"]]
                                 for d in _links(self.ns_of(node))
                                 if d.get("link_index") in self._sw_links
                                 and "link_netnsid" in d}
        return self._ports[node]

    def port_of(self, node: str, itf) -> str | None:
        """The switch port that carries interface ``itf`` of ``node``: a VLAN subinterface
        ``eth1.20`` rides on ``eth1``'s port; where the kernel has no 802.1Q the twin gives
        each VLAN its own veth, ``eth1v20`` (``twin/build.py``)."""
        ports = self.ports(node)
        if itf.vlan is not None and f"eth{itf.index}v{itf.vlan}" in ports:
            return ports[f"eth{itf.index}v{itf.vlan}"]
        return ports.get(f"eth{itf.index}") or ports.get(itf.devname)


def _links(ns: str) -> list[dict]:
    r = netns.run(ns, ["ip", "-j", "link", "show"], timeout=20)
    if r.returncode:
        raise UserError(f"cannot list the devices of namespace {ns}: "
                        f"{(r.stderr or '').strip()[:200]}")
    try:
        return json.loads(r.stdout or "[]")
    except ValueError:
        return []


# -- finding the twin ---------------------------------------------------------------------
def live_twin(where) -> LiveTwin:
    """A LiveTwin from what a caller holds: a ``LiveTwin``, the owner's ``Twin`` (its model
    is used as is), an ``AttachedTwin`` or a ``TwinState``, a twin reference (prefix, run id
    or run folder, as ``--twin`` takes it) or None (the only twin up). Refuses a twin that is
    not up (still building, gone, or left by a dead owner)."""
    if isinstance(where, LiveTwin):
        _check_up(where.state)
        return where
    topo = getattr(where, "topo", None)            # the owner's Twin
    state = getattr(where, "state", None) if not _is_state(where) else where
    if state is None:
        from cyberrange.session import select_twins
        ref = str(where) if where is not None else None
        states = select_twins(ref)
        if not states:
            raise UserError("no twin is up (cyberrange up FILE --detach starts one)")
        state = states[0]
    _check_up(state)
    key = (state.prefix, state.created)
    if key not in _LIVE:        # a twin's nodes and ports never change while it is up
        _LIVE[key] = LiveTwin(state, topo if topo is not None else topology_of(state))
    return _LIVE[key]


_LIVE: dict[tuple[str, float], LiveTwin] = {}


def _is_state(obj) -> bool:
    return hasattr(obj, "prefix") and hasattr(obj, "namespaces") and hasattr(obj, "owner_pid")


def _check_up(state) -> None:
    from cyberrange.twin.state import STATE_DIR
    if not (STATE_DIR / f"{state.prefix}.json").exists() or \
            not netns.path(state.switch_ns or f"{state.prefix}sw").exists():
        raise UserError(f"twin {state.prefix} is not up (it was removed)")
    if not state.namespaces:
        raise UserError(f"twin {state.prefix} was built by an earlier version of cyberrange; "
                        f"blue actions need a twin of named namespaces")
    if not state.owner_alive:
        raise UserError(f"twin {state.prefix} was left by a process that died (pid "
                        f"{state.owner_pid}); remove it with `cyberrange down --stale`")
    if state.status != "up":
        raise UserError(f"twin {state.prefix} is not up yet (status: {state.status})")


_TOPOLOGIES: dict[tuple[str, str], object] = {}


def topology_of(state):
    """The model of a twin another process owns: the topology file its run's manifest names,
    looked for where it was given (the owner's working folder), here, and beside the runs
    folder, and taken only if its sha256 is the one recorded when the twin was built."""
    from cyberrange.run import sha256
    run_dir = Path(state.run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        given = manifest["inputs"]["topology"]
        path, digest = str(given["path"]), str(given["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"twin {state.prefix}: its run folder {run_dir} names no topology file "
                        f"(manifest.json, inputs.topology)") from None
    key = (state.prefix, digest)
    if key in _TOPOLOGIES:
        return _TOPOLOGIES[key]
    changed = None
    for base in _bases(state, run_dir):
        candidate = Path(path) if os.path.isabs(path) else base / path
        if not candidate.is_file():
            continue
        if sha256(candidate) != digest:
            changed = candidate
            continue
        from cyberrange.model.loader import load_topology
        _TOPOLOGIES[key] = topo = load_topology(candidate)
        return topo
    if changed is not None:
        raise UserError(f"twin {state.prefix}: its topology file {changed} changed since the "
                        f"twin was built (sha256 differs); blue actions need the model it was "
                        f"built from")
    raise UserError(f"twin {state.prefix}: cannot find its topology file {path!r} (looked "
                    f"where the twin was started and here)")


def _bases(state, run_dir: Path) -> list[Path]:
    """Folders a relative topology path may be relative to, most likely first."""
    out = []
    try:
        out.append(Path(os.readlink(f"/proc/{state.owner_pid}/cwd")))
    except OSError:
        pass
    out += [Path.cwd(), run_dir.parent.parent]
    return list(dict.fromkeys(out))
