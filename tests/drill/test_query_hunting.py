"""Every query of docs/hunting-queries.md runs on the shared real drill's store (``drill_run``,
tests/drill/conftest.py: no twin of its own) and returns the columns it promises, with at least
one row where the page says the default drill always gives one."""
from __future__ import annotations

import json
import re

import pytest
from helpers import ROOT, cli, needs_twin

PAGE = ROOT / "docs" / "hunting-queries.md"


def page_queries() -> list[tuple[str, list[str], str, str]]:
    """``(title, columns, rows, sql)`` of each query of the page."""
    out, title = [], None
    pattern = re.compile(r"^### ([^\n]+)$|^```sql\n(.*?)^```", re.DOTALL | re.MULTILINE)
    for m in pattern.finditer(PAGE.read_text()):
        if m.group(1):
            title = m.group(1)
            continue
        sql = m.group(2)
        cols = re.search(r"^-- columns: (.+)$", sql, re.MULTILINE)
        rows = re.search(r"^-- rows: (always|sometimes)$", sql, re.MULTILINE)
        assert cols and rows, f"{title}: no '-- columns:' or '-- rows:' line"
        out.append((title, [c.strip() for c in cols.group(1).split(",")], rows.group(1), sql))
    return out


def test_the_page_has_at_least_eight_queries_each_stating_its_columns():
    qs = page_queries()
    assert len(qs) >= 8
    assert sum(r == "always" for _, _, r, _ in qs) >= 8


@needs_twin
def test_every_hunting_query_runs_on_a_real_drill(drill_run):
    from cyberrange.attack.ledger import read_ledger
    from cyberrange.store.views import open_views
    run_dir, _ = drill_run
    con = open_views(run_dir / "store.duckdb", read_ledger(run_dir / "ledger.jsonl"),
                     run_dir / "availability.jsonl")
    queries = page_queries()
    assert len(queries) >= 8
    try:
        for title, cols, rows, sql in queries:
            cur = con.execute(sql)
            assert [d[0] for d in cur.description] == cols, title
            got = cur.fetchall()
            if rows == "always":
                assert got, f"{title}: no row on the default drill"
    finally:
        con.close()


@needs_twin
def test_query_verb_on_the_drill_finds_the_bruteforce_source(drill_run):
    """The verb end to end: the ledger's attacker is the top source of short login sessions."""
    from cyberrange.attack.ledger import read_ledger
    run_dir, _ = drill_run
    attacker = read_ledger(run_dir / "ledger.jsonl")[-1]["source.ip"]
    sql = next(s for t, _, _, s in page_queries() if t.startswith("5."))
    r = cli("query", "--json", "--", str(run_dir), sql, timeout=120)   # SQL starts with "--"
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["source_ip"] == attacker and rows[0]["attempts"] >= 5, rows
    r = cli("query", str(run_dir), "SELECT technique_id FROM alerts WHERE technique_id "
            "IS NOT NULL AND NOT regexp_full_match(technique_id, 'T[0-9]{4}([.][0-9]{3})?')",
            "--csv", timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "technique_id", r.stdout  # ATT&CK ids only


@pytest.mark.parametrize("name", ["ledger.jsonl"])
@needs_twin
def test_a_new_drills_ledger_is_written_in_ecs_names(drill_run, name):
    from cyberrange.attack.ledger import ECS_KEYS
    from cyberrange.ecs import is_attack_id
    run_dir, _ = drill_run
    lines = [json.loads(x) for x in (run_dir / name).read_text().splitlines() if x.strip()]
    assert lines and all(list(rec) == list(ECS_KEYS) for rec in lines)
    assert all(is_attack_id(rec["threat.technique.id"]) for rec in lines)
    assert {rec["event.outcome"] for rec in lines} <= {"success", "failure", "unknown"}
