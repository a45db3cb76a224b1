"""The lab format (docs/lab-format.md): ``labs/<name>/lab.yaml`` loaded into a :class:`Lab`.

A lab file goes through the project's one safe YAML loader (``model.yamlsrc``: size, nesting,
aliases, duplicate keys), its JSON Schema (``model/schemas/lab.schema.json``), then checks
against what it names: the topology (shipped name or a lab-local file), the scenario's
playbooks (loaded and statically checked against that topology, as ``attack run`` does), staged
blue actions and every check's nodes, firewalls, mission threads and scenario steps. Every
refusal is one line ``FILE:LINE:COL: what (did you mean ...?)`` and nothing is built.

Files a lab names stay in the lab's folder tree or the shipped library (``model/inputpaths``).
``solution.yaml`` (CI only, never shown to trainees) is loaded by :func:`load_solution`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cyberrange import content
from cyberrange.errors import UserError
from cyberrange.model import inputpaths
from cyberrange.model.yamlsrc import Limits, did_you_mean, load_yaml, schema_error

SCHEMA = Path(__file__).resolve().parent.parent / "model" / "schemas" / "lab.schema.json"
LIMITS = Limits("lab file", 256 * 1024, 20_000, max_aliases=1_000, max_alias_values=20_000,
                max_alias_chars=256 * 1024)
CHECKOUT = content.builtin_root()      # the shipped content (package data or the checkout)
LAB_FILE = "lab.yaml"
BRIEFING = "briefing.md"
SOLUTION = "solution.yaml"
DEFAULT_TRIES = 3
LIVE_CHECKS = ("reach", "mission", "rule", "service")
BLUE_KEYS = {"block": ("src", "dst", "proto", "port", "at"), "isolate": ("node", "allow"),
             "rule-add": ("firewall", "rule", "position"), "kill-sessions": ("node", "peer"),
             "restart-service": ("node", "service")}
BLUE_REQUIRED = {"isolate": ("node",), "rule-add": ("firewall", "rule"),
                 "kill-sessions": ("node",), "restart-service": ("node",)}


@dataclass
class Check:
    type: str
    spec: dict                      # the check as written (minus ``type``)
    line: int = 0

    def describe(self) -> str:
        s = self.spec
        return {
            "answer": lambda: "answer submitted",
            "reach": lambda: f"{s['from']} -> {s['to']} {s.get('proto', 'tcp')}"
                             f"{'/' + str(s['port']) if s.get('port') else ''} {s['expect']}",
            "mission": lambda: f"mission {s.get('thread', '(all)')} {s.get('expect', 'up')}",
            "rule": lambda: f"{s['firewall']} has rule '{s['match']}'"
                            + (" (absent)" if s.get("expect") == "absent" else ""),
            "service": lambda: f"{s['node']} port {s['port']} {s['expect']}",
            "blue": lambda: f"blue {s['action']}" + (f" {s['target']}" if s.get("target") else "")
                            + (f" before step {s['before_step']}" if s.get("before_step") else ""),
            "step": lambda: f"step {s['step']} {s['outcome']}",
            "detector": lambda: f"detector {s['file']} fires on {', '.join(s['fires_on'])}",
            "topology": lambda: f"topology {s['file']}"
                                + (f" closes {s['closes']['from']} -> {s['closes']['to']}"
                                   if s.get("closes") else "")
                                + (", keeps missions" if s.get("keep_missions") else ""),
        }[self.type]()


@dataclass
class Hint:
    text: str
    cost: int = 0


@dataclass
class Task:
    id: str
    title: str
    text: str
    points: int
    hints: list[Hint]
    checks: list[Check]
    line: int = 0

    @property
    def answer(self) -> Check | None:
        return next((c for c in self.checks if c.type == "answer"), None)

    @property
    def tries(self) -> int | None:
        a = self.answer
        return int(a.spec.get("tries", DEFAULT_TRIES)) if a is not None else None


@dataclass
class ScenarioPlaybook:
    file: str                       # resolved path
    at: float = 0.0
    seed: int | None = None
    pace: dict = field(default_factory=dict)
    playbook: object = None         # the loaded Playbook (paced)
    steps: list[str] = field(default_factory=list)


@dataclass
class Lab:
    name: str
    title: str
    level: str
    minutes: int
    objectives: list[str]
    techniques: list[str]
    topology_file: str              # resolved path
    topology: object
    benign: dict | None             # {intensity, seed} or None (no background traffic)
    playbooks: list[ScenarioPlaybook]
    stage: list[dict]
    tasks: list[Task]
    start_files: list[str]          # resolved paths
    dir: Path
    file: str

    @property
    def briefing(self) -> str:
        return (self.dir / BRIEFING).read_text(encoding="utf-8")

    @property
    def points(self) -> int:
        return sum(t.points for t in self.tasks)

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise UserError(f"lab {self.name} has no task {task_id!r}"
                        f"{did_you_mean(task_id, [t.id for t in self.tasks])} (tasks: "
                        f"{', '.join(t.id for t in self.tasks)})")

    @property
    def steps(self) -> dict[str, str]:
        """Every scenario step id -> its playbook file."""
        return {s: p.file for p in self.playbooks for s in p.steps}

    def checks(self, kind: str | None = None) -> list[tuple[Task, int, Check]]:
        return [(t, i, c) for t in self.tasks for i, c in enumerate(t.checks)
                if kind is None or c.type == kind]


@cache
def lab_schema() -> dict:
    return json.loads(SCHEMA.read_text())


def lab_path(ref) -> Path:
    """``ref``: a lab folder, its lab.yaml, or a lab's name under ``labs/`` of a content root
    (``cyberrange.content``: --content-path, CYBERRANGE_PATH, the built-in labs)."""
    p = Path(ref)
    if p.is_dir():
        return p / LAB_FILE
    if p.is_file() or p.suffix in (".yaml", ".yml"):
        return p
    found = content.find("lab", str(ref))    # --content-path, $CYBERRANGE_PATH, built-in
    if found is not None and (found / LAB_FILE).is_file():
        return found / LAB_FILE
    names = [q.parent.name for q in lab_files()]
    raise UserError(f"no lab {str(ref)!r}{did_you_mean(str(ref), names)} (`cyberrange lab list` "
                    f"lists them)")


def lab_files(folder=None) -> list[Path]:
    """The lab.yaml files under ``folder`` (default: every content root's labs/, the first
    root's lab winning for a name)."""
    if folder:
        return sorted(Path(folder).glob(f"*/{LAB_FILE}")) if Path(folder).is_dir() else []
    return [content.find("lab", n) / LAB_FILE for n in content.names("lab")]


def load_lab(ref) -> Lab:
    """Read and check a lab (folder, file or name); raises UserError (one line, exit 2)."""
    path = lab_path(ref)
    doc = load_yaml(path, LIMITS)
    if not isinstance(doc.data, dict):
        raise doc.error("a lab file must be a mapping with version, name, title, tasks, ...")
    err = schema_error(doc, lab_schema())
    if err:
        raise err
    d = doc.data
    lab_dir = Path(path).resolve().parent
    tree = inputpaths.tree_of(path)
    if d["name"] != lab_dir.name:
        raise doc.error(f"name '{d['name']}' must be the lab's folder name '{lab_dir.name}'",
                        ("name",))
    if not (lab_dir / BRIEFING).is_file():
        raise doc.error(f"the lab has no {BRIEFING} beside {LAB_FILE} (the trainee's briefing)",
                        ("title",))
    topo_file, topo = _topology(doc, d["topology"], lab_dir, tree)
    scen = d.get("scenario") or {}
    playbooks = [_playbook(doc, ("scenario", "playbooks", i), p, lab_dir, tree, topo)
                 for i, p in enumerate(scen.get("playbooks") or [])]
    steps = {}
    for i, pb in enumerate(playbooks):
        for s in pb.steps:
            if s in steps:
                raise doc.error(f"step id '{s}' is in two scenario playbooks (line "
                                f"{doc.pos(('scenario', 'playbooks', steps[s]))[0]}); checks "
                                f"name steps by id", ("scenario", "playbooks", i, "file"))
            steps[s] = i
    stage = [_stage(doc, ("scenario", "stage", i), s, topo)
             for i, s in enumerate(scen.get("stage") or [])]
    start_files = [_confined(doc, ("start_files", i), f, lab_dir, tree, "start file")
                   for i, f in enumerate(d.get("start_files") or [])]
    tasks = []
    for i, t in enumerate(d["tasks"]):
        at = ("tasks", i)
        dup = [x for x in tasks if x.id == t["id"]]
        if dup:
            raise doc.error(f"duplicate task id '{t['id']}' (first at line {dup[0].line})",
                            at + ("id",))
        tasks.append(_task(doc, at, t, topo, steps, [Path(f).name for f in start_files]))
    benign = None if scen.get("benign") is None else dict(scen["benign"])
    return Lab(name=d["name"], title=d["title"], level=d["level"], minutes=d["minutes"],
               objectives=list(d["objectives"]), techniques=list(d.get("techniques") or []),
               topology_file=topo_file, topology=topo, benign=benign, playbooks=playbooks,
               stage=stage, tasks=tasks, start_files=start_files, dir=lab_dir, file=str(path))


# -- parts -------------------------------------------------------------------------------------
def _confined(doc, path, name: str, lab_dir: Path, tree: str, what: str,
              library_base: bool = False) -> str:
    real = inputpaths.confine(name, lab_dir, tree)
    if library_base and (real is None or not Path(real).is_file()):
        real = inputpaths.confine(name, CHECKOUT, tree) or real   # attack_playbooks/x.yaml
    if real is None:
        raise doc.error(inputpaths.outside_message(what, name, tree), path)
    if not Path(real).is_file():
        raise doc.error(f"{what} '{name}' not found (looked in the lab folder"
                        + (" and the shipped library)" if library_base else ")"), path)
    return real


def _topology(doc, name: str, lab_dir: Path, tree: str):
    from cyberrange.model.loader import load_topology
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        shipped = content.find("topology", name)
        if shipped is None:
            known = content.names("topology")
            raise doc.error(f"unknown topology '{name}'{did_you_mean(name, known)} (a shipped "
                            f"topology's name, or a .yaml file in the lab folder)", ("topology",))
        path = str(shipped)
    else:
        path = _confined(doc, ("topology",), name, lab_dir, tree, "topology file")
    try:
        return path, load_topology(path)
    except UserError as e:
        raise doc.error(f"topology '{name}' does not load: {e}", ("topology",)) from None


def _playbook(doc, path, p: dict, lab_dir: Path, tree: str, topo) -> ScenarioPlaybook:
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.attack.runner import check_static
    file = _confined(doc, path + ("file",), p["file"], lab_dir, tree, "playbook",
                     library_base=True)
    try:
        pb = load_playbook(file, topo)
        if p.get("pace"):
            import tempfile
            with tempfile.TemporaryDirectory(prefix="cr-lab-") as td:
                pb = load_playbook(paced_copy(file, p["pace"], td, doc, path), topo)
        check_static(pb, topo)
    except UserError as e:
        raise doc.error(f"playbook '{p['file']}' does not fit the lab's topology: {e}",
                        path + ("file",)) from None
    return ScenarioPlaybook(file=file, at=float(p.get("at", 0)), seed=p.get("seed"),
                            pace=dict(p.get("pace") or {}), playbook=pb,
                            steps=[s.id for s in pb.steps])


def paced_copy(file: str, pace: dict, out_dir, doc=None, path=()) -> str:
    """The playbook ``file`` with ``pace`` (``{step: {params|timing: {...}}}``, pacing only)
    merged over its steps, written to ``out_dir``; its path.
    File parameters are made absolute so the copy loads from anywhere."""
    import yaml
    data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    ids = [s.get("id") for s in data.get("steps") or []]
    for sid in pace:
        if sid not in ids and doc is not None:
            raise doc.error(f"pace: playbook has no step '{sid}'{did_you_mean(sid, ids)}",
                            path + ("pace", sid))
    for step in data.get("steps") or []:
        over = pace.get(step.get("id")) or {}
        params = dict(step.get("params") or {})
        if "pcap" in params and not Path(params["pcap"]).is_absolute():
            params["pcap"] = str((Path(file).parent / params["pcap"]).resolve())
        params.update(over.get("params") or {})
        if params:
            step["params"] = params
        if over.get("timing"):
            step["timing"] = {**(step.get("timing") or {}), **over["timing"]}
            if "rate" in over["timing"]:
                params.pop("rate", None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / Path(file).name
    dst.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(dst)


def _node(doc, path, name, topo, what="node", kinds=None) -> None:
    if name not in topo.nodes:
        raise doc.error(f"unknown {what} '{name}'{did_you_mean(name, topo.nodes)} in topology "
                        f"{topo.name}", path)
    if kinds and topo.nodes[name].kind not in kinds:
        raise doc.error(f"'{name}' is a {topo.nodes[name].kind}, not a {what}", path)


def _stage(doc, path, s: dict, topo) -> dict:
    if "exec" in s:
        _node(doc, path + ("node",), s["node"], topo)
        return {"exec": list(s["exec"]), "node": s["node"], "line": doc.pos(path)[0]}
    action = s["blue"]
    params = {k: v for k, v in s.items() if k != "blue"}
    for k in params:
        if k not in BLUE_KEYS[action]:
            raise doc.error(f"unknown key '{k}' for blue action {action}"
                            f"{did_you_mean(k, BLUE_KEYS[action])} (keys: "
                            f"{', '.join(BLUE_KEYS[action])})", path + (k,), key=True)
    for k in BLUE_REQUIRED.get(action, ()):
        if k not in params:
            raise doc.error(f"blue action {action} needs '{k}'", path)
    if action == "block" and not ({"src", "dst"} & set(params)):
        raise doc.error("blue action block needs src or dst", path)
    for k in ("node", "firewall"):
        if k in params:
            _node(doc, path + (k,), params[k], topo,
                  "firewall" if k == "firewall" else "node",
                  ("firewall", "router") if k == "firewall" else None)
    if action == "rule-add":                # the rule as `blue rule add` reads it, now
        from cyberrange.blue.rules import parse_rule, rule_mapping
        if not topo.nodes[params["firewall"]].filters:
            raise doc.error(f"'{params['firewall']}' filters nothing (not a firewall)",
                            path + ("firewall",))
        given = params["rule"]
        try:
            parse_rule(topo, given if isinstance(given, dict) else rule_mapping(str(given)))
        except UserError as e:
            raise doc.error(f"staged rule: {e.message}", path + ("rule",)) from None
    return {"blue": action, "params": params, "line": doc.pos(path)[0]}


def _task(doc, path, t: dict, topo, steps: dict, start_files: list[str]) -> Task:
    checks = []
    for j, c in enumerate(t["checks"]):
        cpath = path + ("checks", j)
        _check(doc, cpath, c, topo, steps)
        checks.append(Check(c["type"], {k: v for k, v in c.items() if k != "type"},
                            doc.pos(cpath)[0]))
    if all(c.spec.get("keep") for c in checks):
        raise doc.error("every check of this task is 'keep: true' (holds before the trainee "
                        "acts): the task would be solved by default", path + ("checks",))
    answers = [c for c in checks if c.type == "answer"]
    if len(answers) > 1:
        raise doc.error("a task takes one answer (one 'answer' check); split it into tasks",
                        path + ("checks",))
    return Task(id=t["id"], title=t["title"], text=t.get("text", ""), points=t["points"],
                hints=[Hint(h["text"], h.get("cost", 0)) for h in t.get("hints") or []],
                checks=checks, line=doc.pos(path)[0])


def _check(doc, path, c: dict, topo, steps: dict) -> None:
    kind = c["type"]
    if kind == "answer" and "pattern" in c:
        try:
            re.compile(c["pattern"])
        except re.error as e:
            raise doc.error(f"pattern is not a valid regular expression: {e}",
                            path + ("pattern",)) from None
    if kind == "reach":
        _node(doc, path + ("from",), c["from"], topo)
        if c["to"] not in topo.nodes:
            _ip_or_node(doc, path + ("to",), c["to"], topo)
        if c.get("proto", "tcp") != "icmp" and "port" not in c:
            raise doc.error(f"a {c.get('proto', 'tcp')} reach check needs a port", path)
    if kind == "mission":
        if "thread" in c and c["thread"] not in topo.missions:
            raise doc.error(f"unknown mission thread '{c['thread']}'"
                            f"{did_you_mean(c['thread'], topo.missions)} (topology {topo.name} "
                            f"has: {', '.join(topo.missions) or 'none'})", path + ("thread",))
        if not topo.missions:
            raise doc.error(f"topology {topo.name} declares no mission threads", path)
    if kind == "rule":
        _node(doc, path + ("firewall",), c["firewall"], topo, "firewall", ("firewall", "router"))
    if kind == "service":
        _node(doc, path + ("node",), c["node"], topo)
    if kind in ("blue", "step"):
        step = c.get("before_step") if kind == "blue" else c["step"]
        key = "before_step" if kind == "blue" else "step"
        if step is not None and step not in steps:
            raise doc.error(f"no scenario step '{step}'{did_you_mean(step, steps)} (steps: "
                            f"{', '.join(steps) or 'none: the scenario runs no playbook'})",
                            path + (key,))
    if kind == "topology" and "closes" in c:
        for k in ("from", "to"):
            _node(doc, path + ("closes", k), c["closes"][k], topo)


def _ip_or_node(doc, path, text: str, topo) -> None:
    import ipaddress
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise doc.error(f"'{text}' is neither a node of {topo.name}{did_you_mean(text, topo.nodes)}"
                        f" nor an IPv4 address", path) from None


# -- solution.yaml ----------------------------------------------------------------------------
@dataclass
class Solution:
    steps: list[dict]
    timeout: float
    file: str


def load_solution(lab: Lab) -> Solution:
    """The lab's ``solution.yaml`` (CI only), checked against the lab: tasks, steps, verbs."""
    path = lab.dir / SOLUTION
    doc = load_yaml(path, LIMITS)
    schema = {"$defs": lab_schema()["$defs"], "$ref": "#/$defs/solution"}
    err = schema_error(doc, schema)
    if err:
        raise err
    steps = []
    for i, s in enumerate(doc.data["steps"]):
        (verb, arg), = s.items()
        p = ("steps", i, verb)
        if verb == "submit":
            lab_task = [t for t in lab.tasks if t.id == arg["task"]]
            if not lab_task:
                raise doc.error(f"no task '{arg['task']}'"
                                f"{did_you_mean(arg['task'], [t.id for t in lab.tasks])}", p)
            if lab_task[0].answer is None:
                raise doc.error(f"task '{arg['task']}' takes no answer", p)
        if verb == "wait_step" and arg not in lab.steps:
            raise doc.error(f"no scenario step '{arg}'{did_you_mean(arg, lab.steps)}", p)
        if verb == "verify" and arg != "all" and arg not in [t.id for t in lab.tasks]:
            raise doc.error(f"verify takes 'all' or a task id, not '{arg}'", p)
        if verb == "exec":
            _node(doc, p + ("node",), arg["node"], lab.topology)
        if verb == "cli" and (arg[0] in ("up", "down", "drill") or arg[:2] in (
                ["lab", "start"], ["lab", "stop"], ["lab", "restart"])):
            raise doc.error(f"a solution step may not run `cyberrange {' '.join(arg[:2])}`", p)
        steps.append({verb: arg, "line": doc.pos(("steps", i))[0]})
    return Solution(steps, float(doc.data.get("timeout", 60)), str(path))
