"""Detector families registered in one place; detector instances loaded from detectors/*.yaml.

File format (one or more files, every ``*.yaml`` / ``*.yml`` of the folder)::

    detectors:
      - name: vertical-portscan        # unique instance name -> rule.name of its alerts
        family: portscan               # a registered family (see FAMILIES)
        enabled: true                  # optional, default true
        description: ...               # optional, free text
        settings: {mode: ports, window: 10, threshold: 12}

Errors name the file and line: ``detectors/x.yaml:7:18: unknown setting 'treshold' ...``.
``run_detectors`` is the only function that moves data: store -> detectors -> alerts -> store.
Detectors that have the optional ``signals(flows, packets)`` hook also give weak signals
(sub-threshold observations, docs/incidents.md): ``run_detectors`` stores them in the
``signals`` table; they are never alerts.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import pyarrow as pa

from ..errors import UserError
from ..model.yamlsrc import load_yaml
from .base import Alert, Detector, SettingError, alerts_to_table

__all__ = ["FAMILIES", "baseline_window", "collect_signals", "load_detector_file",
           "load_detectors", "register", "run_detectors"]

FAMILIES: dict[str, type[Detector]] = {}

ENTRY_KEYS = ("name", "family", "settings", "enabled", "description")

#: modules of this package that hold no detector family
NOT_FAMILIES = frozenset({"base", "registry", "stream", "features", "incidents", "__init__"})


def register(cls: type[Detector]) -> type[Detector]:
    """Register a detector family (usable as a class decorator)."""
    if cls.family in FAMILIES and FAMILIES[cls.family] is not cls:
        raise RuntimeError(f"detector family {cls.family!r} defined twice: "
                           f"{FAMILIES[cls.family].__module__} and {cls.__module__}")
    FAMILIES[cls.family] = cls
    return cls


def _discover() -> None:
    """Register every Detector subclass with a ``family`` defined in a module of this package
    (a new family is a new module: nothing to edit here)."""
    import importlib
    import inspect
    import pkgutil
    pkg = __name__.rsplit(".", 1)[0]
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name in NOT_FAMILIES or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg}.{mod.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Detector) and obj is not Detector and obj.family \
                    and obj.__module__ == module.__name__:
                register(obj)


_discover()


def _hint(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(choices))})"


#: an instance name becomes ``rule.name`` of its alerts, in tables, reports and Elasticsearch
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load_detector_file(path: str | Path) -> list[Detector]:
    """Detector instances of one YAML file (disabled ones left out)."""
    return [det for det, _where in _load_file(path)]


def _load_file(path: str | Path) -> list[tuple[Detector, tuple]]:
    """``(detector, (file, line, col) of its name)`` for the enabled instances of one file.

    The file goes through the one safe YAML loader (``model.yamlsrc``): size, nesting and alias
    limits, duplicate keys, NaN and infinity, control characters are refused with positions. An
    empty file is an error too (it is more likely a truncated file than a wish for nothing);
    ``detectors: []`` configures none on purpose."""
    doc = load_yaml(path, "detectors")
    data = doc.data
    if data is None:
        raise doc.error("empty file: expected a mapping with a 'detectors' list")
    if not isinstance(data, dict) or "detectors" not in data:
        raise doc.error("expected a mapping with a 'detectors' list")
    for key in data:
        if key != "detectors":
            raise doc.error(f"unknown key {key!r}{_hint(key, ['detectors'])}", (key,), key=True)
    entries = data["detectors"] or []
    if not isinstance(entries, list):
        raise doc.error("'detectors' must be a list", ("detectors",))

    out: list[tuple[Detector, tuple]] = []
    for i, entry in enumerate(entries):
        at = ("detectors", i)
        if not isinstance(entry, dict):
            raise doc.error("each detector must be a mapping with name, family and settings", at)
        for key in entry:
            if key not in ENTRY_KEYS:
                raise doc.error(f"unknown key {key!r}{_hint(key, ENTRY_KEYS)}", at + (key,),
                                key=True)
        for required in ("name", "family"):
            if required not in entry:
                raise doc.error(f"detector needs a {required!r}", at)
        name, family = entry["name"], entry["family"]
        if not isinstance(name, str) or not name:
            raise doc.error("'name' must be a non-empty string", at + ("name",))
        if not NAME.match(name):
            raise doc.error(f"detector name {name!r} is not valid: a letter or digit, then up to "
                            f"63 of A-Z, a-z, 0-9, '_', '.' and '-'", at + ("name",))
        cls = FAMILIES.get(family) if isinstance(family, str) else None
        if cls is None:
            raise doc.error(f"unknown detector family {family!r}{_hint(family, FAMILIES)}",
                            at + ("family",))
        for key, want in (("enabled", bool), ("description", str)):
            if key in entry and not isinstance(entry[key], want):
                raise doc.error(f"{name}: '{key}' must be "
                                f"{'true or false' if want is bool else 'text'}", at + (key,))
        settings = entry.get("settings") or {}
        if not isinstance(settings, dict):
            raise doc.error("'settings' must be a mapping", at + ("settings",))
        try:
            det = cls(name, **settings)
        except SettingError as exc:
            spath = at + ("settings", exc.setting)
            if exc.setting in settings:       # a bad value: at it; an unknown one: at its key
                raise doc.error(f"{name}: {exc.message}", spath,
                                key=exc.setting not in cls.SETTINGS) from None
            raise doc.error(f"{name}: {exc.message}", at + ("settings",), key=True) from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError) as exc:
            raise doc.error(f"{name}: bad settings ({type(exc).__name__}: {exc})",
                            at + ("settings",)) from None
        if entry.get("enabled", True):
            out.append((det, doc.where(at + ("name",))))
    return out


def load_detectors(dir: str | Path = "detectors") -> list[Detector]:
    """All enabled detector instances configured in ``dir/*.yaml`` (sorted by file name)."""
    folder = Path(dir)
    if not folder.is_dir():
        raise UserError(f"detectors folder not found: {folder}")
    detectors: list[Detector] = []
    seen: dict[str, str] = {}
    for path in sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml"))):
        for det, (file, line, col) in _load_file(path):
            if det.name in seen:
                raise UserError(f"detector name {det.name!r} already used in {seen[det.name]}",
                                file=file, line=line, col=col)
            seen[det.name] = f"{file}:{line}"
            detectors.append(det)
    return detectors


def baseline_end(flows: pa.Table, packets: pa.Table | None, seconds: float | None = None,
                 until: float | None = None):
    """End of the baseline window as an aware datetime: ``until`` (epoch seconds: a drill
    records when its warm-up ends) or else ``seconds`` after the first record. None: none."""
    import datetime as _dt

    import pyarrow.compute as pc
    if until is not None:
        return _dt.datetime.fromtimestamp(float(until), _dt.timezone.utc)
    starts = [t.column("@timestamp") for t in (flows, packets) if t is not None and t.num_rows]
    if not seconds or not starts:
        return None
    t0 = min(pc.min(c).as_py() for c in starts)
    return t0 + _dt.timedelta(seconds=float(seconds))


def baseline_window(flows: pa.Table, packets: pa.Table | None, seconds: float | None = None,
                    until: float | None = None):
    """The records before the baseline's end (see ``baseline_end``): the benign baseline that
    trainable detectors learn from. Returns ``(flows, packets)``."""
    import pyarrow.compute as pc
    end_dt = baseline_end(flows, packets, seconds, until)
    if end_dt is None:
        return flows, packets
    end = pa.scalar(end_dt, type=flows.schema.field("@timestamp").type)

    def cut(t):
        if t is None:
            return None
        return t.filter(pc.less(t.column("@timestamp"), end))
    return cut(flows), cut(packets)


def run_detectors(store, run_id: str, detectors: list[Detector], *, write: bool = True,
                  replace: bool = True, baseline_s: float | None = None,
                  baseline_until: float | None = None,
                  train: tuple | None = None, stats: dict | None = None) -> pa.Table:
    """Run every detector over the run's records in ``store``; store and return the alerts.

    Trainable detectors first learn from a benign baseline: ``train`` = ``(flows, packets)``
    records of another (benign) run, or else the first ``baseline_s`` seconds of this run (a
    drill's warm-up, during which only benign traffic runs; ``baseline_until``, epoch seconds,
    ends it at the warm-up's recorded end instead). Neither: they run untrained.
    With ``replace`` (default) earlier alerts (and signals) of the run are removed first, so
    re-running detection does not duplicate them. Weak signals of the detectors that have the
    ``signals`` hook (``collect_signals``) go to the store's ``signals`` table. ``stats``, when
    given, receives ``{detector name: {"seconds", "alerts", "signals", "trained"}}``.
    """
    import time
    flows = store.read("flows", run_id, columns=_columns(store, "flows"))
    need_packets = any(d.needs_packets for d in detectors)
    packets = store.read("packets", run_id, columns=_columns(store, "packets")) \
        if need_packets else None
    if train is None and (baseline_s or baseline_until) and any(d.trainable for d in detectors):
        train = baseline_window(flows, packets, baseline_s, baseline_until)
    alerts, signals = [], []
    for det in detectors:
        t0 = time.perf_counter()
        if det.trainable and train is not None:
            det.fit(train[0], train[1] if det.needs_packets else None)
        found = det.detect(flows, packets if det.needs_packets else None)
        alerts.extend(found)
        weak = collect_signals(det, flows, packets if det.needs_packets else None, found)
        signals.extend(weak)
        if stats is not None:
            stats[det.name] = {"seconds": round(time.perf_counter() - t0, 4),
                               "alerts": len(found), "signals": len(weak),
                               "trained": bool(det.trained)}
    table = alerts_to_table(alerts, run_id)
    if write:
        if replace:
            store.delete("alerts", run_id)
        store.write("alerts", table)
        if store.has("signals"):
            if replace:
                store.delete("signals", run_id)
            store.write("signals", alerts_to_table(signals, run_id))
    return table


def collect_signals(det: Detector, flows: pa.Table, packets: pa.Table | None,
                    alerts: list[Alert]) -> list[Alert]:
    """The weak signals of one detector (its optional ``signals(flows, packets)`` hook; none
    without it), held to the contract (docs/incidents.md): ``kind`` "signal", dataset
    ``cyberrange.signal``, ``rule_name`` the instance name, a score in (0, 1). A signal whose
    flows all lie in one of the detector's own ``alerts`` is dropped: an observation that
    raised an alert is not also a signal."""
    hook = getattr(det, "signals", None)
    if not callable(hook):
        return []
    alerted = set()
    for a in alerts:
        alerted.update(a.flow_ids or ())
    out = []
    for sig in hook(flows, packets) or ():
        if sig.flow_ids and alerted.issuperset(sig.flow_ids):
            continue
        sig.kind, sig.dataset, sig.rule_name = "signal", "cyberrange.signal", det.name
        sig.rule_category = sig.rule_category or det.family
        sig.technique = sig.technique or det.technique
        sig.score = min(max(float(sig.score), 1e-3), 0.999)
        out.append(sig)
    return out


def _columns(store, kind: str) -> list[str] | None:
    """Every column the store keeps for ``kind`` (core + added fields), so detectors can use
    the added fields (DNS names, Modbus codes, ARP bindings, inter-arrival times)."""
    from ..telemetry.schema import RECORD_SCHEMAS
    return list(RECORD_SCHEMAS[kind].names)
