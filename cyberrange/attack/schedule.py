"""The run-time half of the playbook format, scheduling: when a step starts (``delay`` or
``at``) and when each of its executions starts (``repeat`` every ``every`` seconds), with
``jitter`` drawn from the playbook's seed so that a run can be repeated. Pure functions: the
runner calls them, tests use them without root. See docs/playbook-format.md.
"""
from __future__ import annotations

import random

from cyberrange.attack.playbook import Timing


def step_rng(seed: int, step_id: str) -> random.Random:
    """The random source of one step's jitter: the same seed gives the same waits, whatever
    else runs concurrently."""
    return random.Random(f"{seed}/{step_id}")


def jittered(base: float, jitter: float, rng: random.Random) -> float:
    """``base`` scaled by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]``."""
    if base <= 0 or jitter <= 0:
        return max(base, 0.0)
    return base * (1.0 + rng.uniform(-jitter, jitter))


def start_wait(timing: Timing, rng: random.Random) -> float:
    """The (jittered) wait before the first execution, for a step without ``at``."""
    return jittered(timing.delay, timing.jitter, rng)


def repeat_offsets(timing: Timing, rng: random.Random) -> list[float]:
    """Start of each execution relative to the first one: ``[0, e1, e1+e2, ...]`` with every
    interval ``every`` jittered (an absolute schedule: a slow execution does not shift later
    ones, it only makes the next start at once)."""
    out, t = [0.0], 0.0
    for _ in range(max(1, int(timing.repeat)) - 1):
        t += jittered(timing.every, timing.jitter, rng)
        out.append(t)
    return out


def schedule(step, seed: int) -> tuple[float, list[float]]:
    """``(wait before the first execution, offsets of the executions)``; ``at`` steps wait
    ``at`` seconds from the playbook start instead (not jittered: it is a time on the plan)."""
    timing = getattr(step, "timing", None) or Timing(delay=float(getattr(step, "delay_s", 0) or 0))
    rng = step_rng(seed, step.id)
    first = float(timing.at) if timing.at is not None else start_wait(timing, rng)
    return first, repeat_offsets(timing, rng)
