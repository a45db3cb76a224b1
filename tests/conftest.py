"""Fixtures and hooks for the whole suite (the helpers test modules import are in
tests/support/helpers.py; a folder's own fixtures are in its conftest.py). Twin tests build real
Mininet twins and so need root."""
from __future__ import annotations

import sys

import pytest
from helpers import can_build_twin


_AT_START: dict[str, set] = {}


def pytest_sessionstart(session):
    """What was there before the suite (another session's twins) is not the suite's."""
    if can_build_twin() is None:
        from cyberrange.twin.state import leftovers
        _AT_START.update({k: set(v) for k, v in leftovers().items()})


def _ours(state, config) -> bool:
    """Whether a twin was made by this test session (its run folder is under pytest's
    temporary base folder): the suite never judges or removes another session's twins."""
    base = str(config._tmp_path_factory.getbasetemp()).rstrip("/") + "/"
    return str(state.run_dir or "").startswith(base)     # pytest-36/ is not pytest-368/


def pytest_sessionfinish(session, exitstatus):
    """After the whole suite no kernel object of any twin made by it may remain (objects that
    were there before it started, or belong to another session's live twin, are not its)."""
    if can_build_twin() is not None:
        return
    from background import close_all
    close_all()                 # drills still running in the background (Ctrl-C) end first
    from cyberrange.twin.state import leftovers, live_states
    # another session's live twin is named in its objects by its prefix (links, namespaces)
    # or by its run folder (the command lines of its tcpdump, services and generators)
    others = {m for s in live_states() if not _ours(s, session.config)
              for m in (s.prefix, str(s.run_dir or "") or s.prefix)}
    left = {k: [o for o in v if o not in _AT_START.get(k, ())
                and not any(p in o for p in others)] for k, v in leftovers().items()}
    if any(left.values()):
        print(f"\nLEFTOVER twin objects after the suite: {left}", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="module", autouse=True)
def no_stale_twin_left_by_the_module(request):
    """A module should not leave a twin whose owner is gone (a drill killed by a timeout, a
    crash): the next drill would print a stale-twin note and its kernel objects would stay
    until a later ``down --stale``. Such a twin is removed here, and the suite ends with a
    warning naming the module that left it (once seen on CI, a fob drill, not reproduced
    here in 244 tests; the warning says where to look next time)."""
    if can_build_twin() is not None:
        yield
        return
    from cyberrange.twin.state import live_states
    before = {s.prefix for s in live_states()}
    yield
    left = [s for s in live_states() if s.prefix not in before and not s.owner_alive
            and _ours(s, request.config)]
    if left:
        import warnings
        from cyberrange.session import remove_twin
        for s in left:
            remove_twin(s)
        warnings.warn(f"{request.module.__name__} left stale twin(s), removed: "
                      + ", ".join(f"{s.prefix} (run {s.run_id}, {s.run_dir})" for s in left),
                      stacklevel=1)
