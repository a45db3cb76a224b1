"""The run-time half of the playbook format, facts: a step's ``#{step.fact}`` references are
replaced by what earlier steps produced (:func:`substitute`, :func:`expand_target`), its
``requires``/``when`` are tested on them (:func:`precondition_failure`) and its parameters are
type-checked once substituted (:func:`check_param_types`). Pure functions: the runner calls
them, tests use them without root. See docs/playbook-format.md.
"""
from __future__ import annotations

import copy
import json

from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.attack.playbook import FACT_ANY, FACT_INNER, FACT_REF
from cyberrange.attack.spec import type_ok, type_phrase
from cyberrange.errors import UserError


class FactUnavailable(UserError):
    """A step refers to a fact that does not exist at run time (its step was skipped, failed
    before producing it, or did not produce it). The runner skips the step and says why."""


def _lookup(step_id: str, fact: str, facts: dict[str, dict], status: dict[str, str] | None):
    if step_id not in facts:
        how = (status or {}).get(step_id)
        why = f"step '{step_id}' was {how}" if how else f"step '{step_id}' has not run"
        raise FactUnavailable(f"#{{{step_id}.{fact}}} is not available ({why})")
    if fact not in facts[step_id]:
        raise FactUnavailable(f"#{{{step_id}.{fact}}} is not available (step '{step_id}' "
                              f"produced {', '.join(sorted(facts[step_id])) or 'no facts'})")
    return copy.deepcopy(facts[step_id][fact])


def fact_text(value) -> str:
    """The string form of a fact inserted into a longer string: scalars as text, lists joined
    with commas, mappings as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(fact_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def substitute(value, facts: dict[str, dict], status: dict[str, str] | None = None):
    """``value`` with every ``#{step.fact}`` replaced. A whole-string reference becomes the
    fact itself (type kept: a list stays a list); a reference inside a longer string inserts
    :func:`fact_text`. Lists and mappings are walked. Raises :class:`FactUnavailable`."""
    if isinstance(value, str):
        m = FACT_REF.match(value)
        if m:
            return _lookup(*m.groups(), facts, status)
        if "#{" not in value:
            return value

        def repl(m):
            inner = FACT_INNER.match(m.group(1))
            if not inner:
                return m.group(0)
            return fact_text(_lookup(*inner.groups(), facts, status))
        return FACT_ANY.sub(repl, value)
    if isinstance(value, list):
        return [substitute(v, facts, status) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, facts, status) for k, v in value.items()}
    return value


def expand_target(entry: str, facts: dict[str, dict], status: dict[str, str] | None = None
                  ) -> list[str]:
    """One target entry as written -> target strings before name resolution. ``#{s.f}`` gives
    one entry per fact item; ``"#{s.hosts}:22"`` (one reference in a longer string) gives one
    entry per item with the text around it; items that are mappings give their
    ``target``/``ip``/``host``."""
    entry = str(entry).strip()
    refs = list(FACT_ANY.finditer(entry))
    if not refs:
        return [entry]
    if len(refs) == 1:
        inner = FACT_INNER.match(refs[0].group(1))
        if inner:
            value = _lookup(*inner.groups(), facts, status)
            head, tail = entry[:refs[0].start()], entry[refs[0].end():]
            return [f"{head}{v}{tail}" for v in fact_items(value)]
    return [substitute(entry, facts, status)]


def fact_items(value) -> list[str]:
    """A fact as a list of strings naming hosts or services: lists of ips / ip:port / names,
    or mappings (credentials) by their ``target``, ``ip`` or ``host``."""
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    out = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("target") or v.get("ip") or v.get("host")
        if v not in (None, ""):
            out.append(str(v))
    return out


def is_empty(value) -> bool:
    if value is None or value is False:
        return True
    try:
        return len(value) == 0
    except TypeError:
        return False


def precondition_failure(step, facts: dict[str, dict],
                         status: dict[str, str] | None = None) -> str | None:
    """Why ``step`` must be skipped (its ``requires``/``when`` do not hold), or None."""
    def value_of(ref: str):
        try:
            return substitute(ref, facts, status), None
        except FactUnavailable as e:
            return None, e.message

    for ref in getattr(step, "requires", []) or []:
        value, missing = value_of(ref)
        if missing:
            return f"requires {ref}: {missing}"
        if is_empty(value):
            return f"requires {ref}: it is empty"
    for c in getattr(step, "when", []) or []:
        value, missing = value_of(c.fact)
        tested = False
        if c.not_empty is not None:
            tested = True
            if c.not_empty and (missing or is_empty(value)):
                return f"when {c.fact} not_empty: {missing or 'it is empty'}"
            if not c.not_empty and not missing and not is_empty(value):
                return f"when {c.fact} not_empty: false: it holds {fact_text(value)[:80]}"
        if c.min_count is not None:
            tested = True
            n = 0 if missing or value is None else (len(value) if hasattr(value, "__len__") else 1)
            if n < c.min_count:
                return f"when {c.fact} min_count {c.min_count}: it has {n}" + (
                    f" ({missing})" if missing else "")
        if c.has_contains:
            tested = True
            items = value if isinstance(value, list) else [value]
            if missing or (c.contains not in items and str(c.contains) not in fact_items(items)):
                return f"when {c.fact} contains {c.contains!r}: " + (missing or "it does not")
        if not tested and (missing or is_empty(value)):
            return f"when {c.fact}: {missing or 'it is empty'}"
    return None


def check_param_types(technique_id: str, params: dict) -> str | None:
    """After substitution: a message naming the first parameter of a wrong type, or None."""
    technique = TECHNIQUES.get(technique_id)
    if technique is None:
        return None
    for name, p in technique.params.items():
        if name in params and params[name] is None and p.default is None:
            continue        # the catalog's own "not set" default (T1071.x `seed`): no fact here
        if name in params and not type_ok(params[name], p.type):
            v = params[name]
            return (f"params.{name}: expected {type_phrase(p.type)} after fact substitution, "
                    f"got {type(v).__name__} {fact_text(v)[:120]!r}")
    return None
