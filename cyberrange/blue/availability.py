"""Mission availability during a drill: the topology's mission threads and every declared service,
probed from inside the twin while the drill runs, one line per probe in ``availability.jsonl``.

What is probed, and from where (``plan_targets``):

* a **mission thread** (``missions:``, e.g. ``cop: "ops-ws* -> c2-server tcp/8080"``) from its
  own clients: each probe goes from one ``src`` node of the thread to one ``dst`` node, the
  pair drawn at random each time, so every pair is covered over time while a thread costs the
  same whatever its number of pairs;
* a **service** (``services:`` of a host), as the thread ``service:<node>:<proto>/<port>``,
  from one prober node: a client of a mission thread that uses that very service (a real
  client), else another host of the service's zone (a workstation first), else the zone's
  router, else the host itself (then only the server program is checked, not the network).

The attackers (entry points and the playbook's actors) never probe: their probes would be in
the attack's traffic and would teach the trainable detectors that their flows are normal (the
historian that polls the PLCs is the Modbus playbook's actor). A thread whose clients are all
attackers is probed from a stand-in chosen like a service's prober, named in ``via``.

How (``twin/probe.py --serve``): one long-lived prober process per probing node (inside its
namespace) takes orders on stdin and answers on stdout, so a probe costs a few packets and no
process. A probe is ok when the service answered as it should (an HTTP status, a login banner,
a DNS answer, Modbus registers that still hold the topology's values, an echo reply), see
``twin/probe.py``.

When (``AvailabilityProber``): from twin-up until the drill's cleanup, each mission thread on
average once per ``interval_s`` and each service once per ``SERVICE_FACTOR`` intervals (the
threads are what the drill is about; a service often shares its traffic with one), at random
times (Poisson arrivals, after a first few rounds over every pair): a fixed rhythm would look
like C2 beaconing to the beacon detector. Login ports (22, 2222, ...) are probed at most once
per ``LOGIN_MEAN_S`` on average and never within ``LOGIN_GAP_S`` of another login probe of the
same source, so that no detector of password guessing or spraying counts them as attempts.
Probe traffic is benign traffic: the sensors capture it, it is not in the ledger, so it is
never counted as attack.

Each answer becomes one line of ``availability.jsonl`` (``docs/blue-team.md``, "Mission
availability"); ``score/availability.py`` turns the file into the scorecard's section.
"""
from __future__ import annotations

import heapq
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Target", "plan_targets", "attackers", "AvailabilityProber", "start_probes",
           "LOGIN_PORTS", "LOGIN_GAP_S", "LOGIN_MEAN_S"]

#: ports whose short sessions the login detectors count (detectors/bruteforce.yaml, lateral.yaml)
LOGIN_PORTS = frozenset({22, 23, 445, 2222, 3389, 5985, 5986})
LOGIN_TYPES = frozenset({"login", "ssh"})
#: seconds between two login-port probes of one source: 20 s / 5.5 s < 8 attempts per target
#: (login-bruteforce), 30 s / 5.5 s < 7 attempts across targets (password-spray)
LOGIN_GAP_S = 5.5
SERVICE_FACTOR = 4         # a service is probed 4 times less often than a mission thread
#: a login port at most once per 20 s on average: Poisson arrivals with a 5.5 s floor stay
#: irregular (the beacon detector scores regularity) only when the mean is well above the floor
LOGIN_MEAN_S = 20.0
SWEEP_ROUNDS = 3           # first rounds over every pair (the trainable detectors' baseline)
PROBE_TIMEOUT_S = 4.0      # a probe that gets no answer in this time failed ("timeout")
STOP_GRACE_S = 1.0         # at the end, probes under way get this long to answer (at least;
                           # their timeout where one is still pending: over a SATCOM hop an
                           # HTTP probe takes 2.2 s)


@dataclass
class Target:
    """One thing whose availability is measured: a mission thread or a service."""
    thread: str                                   # mission name | service:<node>:<proto>/<port>
    kind: str                                     # "mission" | "service"
    proto: str
    port: int | None
    pairs: list[tuple[str, str, str]]             # (src node, dst node, dst ip)
    service: str | None = None                    # service type at the (first) destination
    checks: dict = field(default_factory=dict)    # dst node -> what its answer must hold:
    #                                               service type, modbus registers, dns qname
    via: str = ""                                 # how the probing node was chosen
    static: list[str] = field(default_factory=list)   # pairs the model says cannot connect

    @property
    def login(self) -> bool:
        return self.proto == "tcp" and (self.port in LOGIN_PORTS or self.service in LOGIN_TYPES)


def _service_at(node, proto: str, port: int | None):
    for svc in node.services:
        if svc.proto == proto and svc.port == port:
            return svc
    return None


def _check_fields(topo, dst_node, svc) -> dict:
    if svc is None:
        return {}
    out: dict = {"service": svc.type}
    if svc.type == "modbus":
        out["registers"] = {int(k): int(v) for k, v in (svc.registers or {}).items()}
    if svc.type == "dns":
        out["qname"] = f"{dst_node.name}.{topo.domain}"
    return out


def _prober(topo, node, proto: str, port: int | None, exclude: set[str]) -> tuple[str, str]:
    """The node that probes ``proto``/``port`` of ``node`` for a service (or a thread whose
    clients are all attackers), and why (see the module's docstring)."""
    for m in topo.missions.values():
        if node.name in m.dst and m.proto == proto and m.port == port:
            for src in m.src:
                if src != node.name and src not in exclude:
                    return src, f"client of mission {m.name}"
    zone = node.interfaces[0].zone
    # a workstation (no service of its own) first: servers seldom open connections
    for h in sorted(topo.hosts, key=lambda h: bool(h.services)):
        if h.name != node.name and h.name not in exclude and \
                any(i.zone == zone for i in h.interfaces):
            return h.name, f"host in zone {zone}"
    for r in topo.routers:
        if any(i.zone == zone for i in r.interfaces):
            return r.name, f"router of zone {zone}"
    return node.name, "the host itself (nothing else in its zone): the server, not the network"


def _static(topo, pairs, proto, port) -> list[str]:
    from cyberrange.model.reach.walk import allowed
    out = []
    for src, dst, ip in pairs:
        try:
            ok, why = allowed(topo, src, ip, proto, port)
        except Exception as e:  # noqa: BLE001 - a model question must not stop the drill
            ok, why = False, str(e)
        if not ok:
            out.append(f"{src} -> {dst}: {why}")
    return out


def plan_targets(topo, exclude=()) -> list[Target]:
    """Every mission thread and every declared service of ``topo`` as probe targets."""
    exclude = set(exclude)
    nodes = topo.nodes
    targets: list[Target] = []
    for m in topo.missions.values():
        # an attacker among the clients never probes: its probes would be in the attack's
        # traffic and teach the trainable detectors that its flows are normal
        pairs = [(s, d, str(nodes[d].ip)) for s in m.src for d in m.dst
                 if s != d and s not in exclude]
        via = "the thread's clients"
        if not pairs and m.dst:
            stand_in = {d: _prober(topo, nodes[d], m.proto, m.port, exclude) for d in m.dst}
            pairs = [(src, d, str(nodes[d].ip)) for d, (src, _) in stand_in.items()]
            via = (f"its clients ({', '.join(m.src)}) are the attack's, so: "
                   + "; ".join(f"{src} ({why})" for src, why in dict(stand_in.values()).items()))
        checks = {d: _check_fields(topo, nodes[d], _service_at(nodes[d], m.proto, m.port))
                  for d in m.dst}
        t = Target(m.name, "mission", m.proto, m.port, pairs, via=via, checks=checks,
                   service=checks[m.dst[0]].get("service") if m.dst else None)
        t.static = _static(topo, pairs, m.proto, m.port)
        targets.append(t)
    for node in topo.hosts:
        for svc in node.services:
            src, via = _prober(topo, node, svc.proto, svc.port, exclude)
            pairs = [(src, node.name, str(node.ip))]
            t = Target(f"service:{node.name}:{svc.proto}/{svc.port}", "service", svc.proto,
                       svc.port, pairs, service=svc.type, via=via,
                       checks={node.name: _check_fields(topo, node, svc)})
            t.static = _static(topo, pairs, svc.proto, svc.port) if src != node.name else []
            targets.append(t)
    return [t for t in targets if t.pairs]


def _describe(t: Target) -> dict:
    d = {"kind": t.kind, "proto": t.proto, "port": t.port, "service": t.service,
         "pairs": len(t.pairs), "src": sorted({p[0] for p in t.pairs}),
         "dst": sorted({p[1] for p in t.pairs}), "via": t.via}
    if t.static:
        d["statically_denied"] = t.static
    return d


class AvailabilityProber:
    """Probes ``targets`` through ``twin`` (anything with ``popen(node, argv, **kw)``) until
    ``stop``; each answer is appended to ``path`` as one JSON line (flushed: a live view can
    follow the file)."""

    def __init__(self, twin, targets: list[Target], path, interval_s: float = 2.0,
                 seed: int | None = None, timeout_s: float = PROBE_TIMEOUT_S,
                 log_dir=None):
        if interval_s <= 0:
            raise ValueError("the probe interval must be positive")
        self.twin, self.targets, self.path = twin, targets, Path(path)
        self.interval_s, self.timeout_s = float(interval_s), float(timeout_s)
        self.log_dir = Path(log_dir) if log_dir else None
        self.rng = random.Random(seed)
        self.procs: dict[str, subprocess.Popen] = {}
        self.readers: list[threading.Thread] = []
        self.pending: dict[int, tuple[Target, tuple[str, str, str]]] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.scheduler: threading.Thread | None = None
        self.login_next: dict[str, float] = {}
        self.sent = self.answered = 0
        self.dead: dict[str, str] = {}
        self.out = None
        self._ids = 0
        self._files: list = []

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> "AvailabilityProber":
        self.out = open(self.path, "a", buffering=1)
        for node in sorted({p[0] for t in self.targets for p in t.pairs}):
            err = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                err = open(self.log_dir / f"probe-{node}.err", "w")
                self._files.append(err)
            p = self.twin.popen(node, [sys.executable, "-m", "cyberrange.twin.probe", "--serve"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, bufsize=1)
            self.procs[node] = p
            r = threading.Thread(target=self._read, args=(node, p), daemon=True,
                                 name=f"avail-{node}")
            r.start()
            self.readers.append(r)
        self.scheduler = threading.Thread(target=self._schedule, daemon=True, name="avail")
        self.scheduler.start()
        return self

    def stop(self) -> dict:
        """Stop probing; probes still under way get their timeout to answer (later ones are
        not recorded); the wait ends as soon as none is pending. Returns the summary for the
        manifest."""
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.join(timeout=5)
        for p in self.procs.values():
            try:
                p.stdin.close()
            except OSError:
                pass
        end = time.monotonic() + max(STOP_GRACE_S, self.timeout_s)
        while self.pending and time.monotonic() < end and any(
                p.poll() is None for p in self.procs.values()):
            time.sleep(0.02)
        for p in self.procs.values():           # answered: no need to wait for the closes
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for r in self.readers:
            r.join(timeout=2)
        for f in self._files:
            f.close()
        with self.lock:
            if self.out is not None:
                self.out.close()
                self.out = None
            unanswered = len(self.pending)
        return {"probes": self.sent, "answered": self.answered, "unanswered_at_stop": unanswered,
                "probers": sorted(self.procs), "dead_probers": dict(self.dead)}

    # -- scheduling ------------------------------------------------------------------------
    def _gap(self, t: Target) -> float:
        """Poisson arrivals (no rhythm for the beacon detector to find): a mission thread once
        per interval on average, a service ``SERVICE_FACTOR`` times less often, a login port
        at most once per ``LOGIN_MEAN_S``."""
        mean = self.interval_s * (SERVICE_FACTOR if t.kind == "service" else 1)
        return self.rng.expovariate(1 / (max(mean, LOGIN_MEAN_S) if t.login else mean))

    def _login_free(self, src: str) -> bool:
        return self.login_next.get(src, 0.0) <= time.monotonic()

    def _schedule(self) -> None:
        rng, interval = self.rng, self.interval_s
        now = time.monotonic()
        heap: list = []
        n = 0
        for i, t in enumerate(self.targets):     # first rounds: every pair, at random moments
            rounds = 1 if t.login else SWEEP_ROUNDS
            for r in range(rounds):
                for j in range(len(t.pairs)):
                    heapq.heappush(heap, (now + (r + rng.random()) * interval, n, i, j))
                    n += 1
            heapq.heappush(heap, (now + rounds * interval + self._gap(t), n, i, None))
            n += 1
        while not self.stop_event.is_set() and heap:
            due, _, i, j = heap[0]
            wait = due - time.monotonic()
            if wait > 0:
                if self.stop_event.wait(min(wait, 0.5)):
                    break
                continue
            heapq.heappop(heap)
            t = self.targets[i]
            if j is not None:                    # a first-round probe of one pair
                pair = t.pairs[j]
                if t.login and not self._login_free(pair[0]):      # waits for its source
                    heapq.heappush(heap, (self.login_next[pair[0]] + rng.random(), n, i, j))
                    n += 1
                    continue
            else:
                heapq.heappush(heap, (max(due, time.monotonic()) + self._gap(t), n, i, None))
                n += 1
                free = [p for p in t.pairs if not t.login or self._login_free(p[0])]
                if not free:                     # skipped, not delayed: a delay would make
                    continue                     # the login probes regular (beacon-like)
                pair = rng.choice(free)
            if t.login:
                self.login_next[pair[0]] = time.monotonic() + LOGIN_GAP_S
            self._send(t, pair)

    def _send(self, t: Target, pair) -> None:
        src, dst, ip = pair
        if src in self.dead:
            return
        with self.lock:
            self._ids += 1
            oid = self._ids
            self.pending[oid] = (t, pair)
        order = {"id": oid, "proto": t.proto, "ip": ip, "port": t.port, "service": None,
                 "timeout": self.timeout_s, **t.checks.get(dst, {})}
        try:
            p = self.procs[src]
            p.stdin.write(json.dumps(order) + "\n")
            p.stdin.flush()
            self.sent += 1
        except (OSError, ValueError) as e:
            self.dead[src] = f"{type(e).__name__}: {e}"
            with self.lock:
                self.pending.pop(oid, None)

    # -- answers ---------------------------------------------------------------------------
    def _read(self, node: str, p: subprocess.Popen) -> None:
        for line in p.stdout:
            try:
                res = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self.lock:
                got = self.pending.pop(res.get("id"), None)
                if got is None or self.out is None:
                    continue
                t, (src, dst, ip) = got
                self.answered += 1
                self.out.write(json.dumps({
                    "time": res.get("time"), "thread": t.thread, "src": src, "dst": dst,
                    "dst_ip": ip, "proto": t.proto, "port": t.port, "ok": bool(res.get("ok")),
                    "latency_ms": res.get("latency_ms"), "reason": res.get("reason")}) + "\n")
        if not self.stop_event.is_set():
            self.dead.setdefault(node, f"prober exited ({p.poll()})")


def attackers(topo, playbook=None) -> set[str]:
    """Nodes whose traffic is the attack's: the entry points and the playbook's actors (those
    named in it; an actor taken from an earlier step's facts is known only at run time)."""
    out = set(topo.entry_points)
    if playbook is not None:
        out |= {s.actor for s in playbook.steps if s.actor_ref is None}
    return out


def probe_timeout(topo, link_emulation: str = "emulate") -> float:
    """``PROBE_TIMEOUT_S`` plus three round trips of the topology's slowest emulated link:
    over a 550 ms SATCOM hop an HTTP probe needs two round trips (2.2 s) and one lost segment
    (0.5 % each way) costs a retransmission of about one more; with 4 s, about one SATCOM
    probe in 30 timed out on a link that was up. Links not emulated (``shape``) add nothing."""
    if link_emulation == "shape":
        return PROBE_TIMEOUT_S
    rtts = [2 * (z.profile.delay_ms + z.profile.jitter_ms) / 1000
            for z in topo.zones.values() if z.profile is not None]
    return round(PROBE_TIMEOUT_S + 3 * max(rtts, default=0.0), 2)


def start_probes(session, run, twin, topo, playbook, interval_s: float, ui=None):
    """The drill's probes: plan, start, and stop in the session's cleanup (before the sensors
    stop). The plan and, at the end, the counts go to ``run.manifest["availability"]``."""
    targets = plan_targets(topo, attackers(topo, playbook))
    if not targets:
        return None
    prober = AvailabilityProber(twin, targets, run.dir / "availability.jsonl", interval_s,
                                seed=run.manifest.get("seed"), log_dir=run.dir / "logs",
                                timeout_s=probe_timeout(topo, getattr(twin, "link_emulation",
                                                                      "emulate")))
    run.manifest["availability"] = {"interval_s": interval_s, "timeout_s": prober.timeout_s,
                                    "file": "availability.jsonl",
                                    "threads": {t.thread: _describe(t) for t in targets}}
    run.save()

    def stop():
        run.manifest["availability"].update(prober.stop())

    session.on_cleanup("stopping the availability probes", stop)
    prober.start()
    if ui is not None:
        nodes = len({p[0] for t in targets for p in t.pairs})
        ui.phase("twin", f"probing {sum(t.kind == 'mission' for t in targets)} mission threads "
                         f"and {sum(t.kind == 'service' for t in targets)} services from "
                         f"{nodes} nodes every {interval_s:g} s")
    return prober
