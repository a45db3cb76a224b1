"""Terminal table of the scorecard's ``availability`` section (score/availability.py)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table


def _pct(v) -> str:
    if v is None:
        return "—"
    colour = "green" if v >= 0.999 else "yellow" if v >= 0.9 else "red"
    return f"[{colour}]{v * 100:.1f} %[/]"


def availability_table(card: dict) -> Table | None:
    """Mission threads first, then services; None when the run has no probes."""
    sec = card.get("availability")
    if not isinstance(sec, dict) or not isinstance(sec.get("threads"), dict):
        return None
    start = sec.get("start")
    every = f", a probe every {sec['interval_s']:g} s on average" \
        if isinstance(sec.get("interval_s"), (int, float)) else ""
    overall = sec.get("overall")
    t = Table(title=f"Mission availability: {_pct(overall)} overall{every}",
              box=box.SIMPLE_HEAVY, title_justify="left")
    for h, j in (("thread", "left"), ("probes", "right"), ("ok", "right"),
                 ("availability", "right"), ("first down", "right"), ("down", "right"),
                 ("latency", "right")):
        t.add_column(h, justify=j)
    rows = sorted(sec["threads"].items(), key=lambda kv: (kv[1].get("kind") == "service", kv[0]))
    for name, r in rows:
        fd = r.get("first_down")
        first = "—" if fd is None else (f"+{fd - start:.1f} s" if isinstance(start, (int, float))
                                        else f"{fd:.1f}")
        lat = r.get("latency_ms")
        t.add_row(name if r.get("kind") != "service" else f"[dim]{name}[/]",
                  str(r.get("probes", 0)), str(r.get("ok", 0)), _pct(r.get("availability")),
                  first, f"{r.get('down_s') or 0:.1f} s", "—" if lat is None else f"{lat:.1f} ms")
    return t


def print_availability(card: dict, console: Console | None = None) -> None:
    """Print the table (nothing when the scorecard has no availability section)."""
    table = availability_table(card)
    if table is not None:
        (console or Console()).print(table)
