"""The Kibana saved objects (kibana/cyberrange-dashboard.ndjson) checked offline.

No Kibana server runs here, so these tests cannot import the file into Kibana; they check what
an import depends on: every reference resolves to an object of the file, every field a chart,
a search or a query uses is in the Elasticsearch mappings the backend installs
(``cyberrange/store/es_mappings.py``) with a type that can be aggregated the way the chart does,
and the dashboard's panels point at the right objects.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import ROOT

from cyberrange.store.es_mappings import KINDS, kind_mappings

NDJSON = ROOT / "kibana" / "cyberrange-dashboard.ndjson"
AGGREGATABLE = {"keyword", "ip", "long", "double", "date", "boolean"}
NUMERIC = {"long", "double"}


def _objects() -> list[dict]:
    return [json.loads(line) for line in NDJSON.read_text().splitlines() if line.strip()]


def _field(kind: str, name: str) -> dict | None:
    """The mapping of ``name`` in the index template of ``kind`` (None: not mapped)."""
    node = {"properties": kind_mappings(kind)["properties"]}
    for part in name.split("."):
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    return node


def _kind_of(data_view: dict) -> str:
    kind = data_view["attributes"]["title"].removeprefix("cyberrange-").rstrip("*")
    assert kind in KINDS, data_view["id"]
    return kind


def _kql_fields(query: str) -> list[str]:
    return re.findall(r"([A-Za-z@][\w.@]*)\s*:", query)


@pytest.fixture(scope="module")
def objs():
    return _objects()


def test_kibana_objects_match_their_generator_no_kibana_server_here():
    r = subprocess.run([sys.executable, "kibana/make_dashboard.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kibana_every_reference_resolves_in_the_file_no_kibana_server_here(objs):
    ids = [(o["type"], o["id"]) for o in objs]
    assert len(ids) == len(set(ids)), "an object twice"
    for o in objs:
        assert o["type"] in {"index-pattern", "lens", "search", "dashboard"}, o["type"]
        names = [r["name"] for r in o["references"]]
        assert len(names) == len(set(names)), o["id"]
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in ids, (o["id"], ref)


def test_kibana_data_views_have_a_mapped_time_field_no_kibana_server_here(objs):
    views = [o for o in objs if o["type"] == "index-pattern"]
    assert {_kind_of(v) for v in views} == set(KINDS)
    for v in views:
        tf = v["attributes"]["timeFieldName"]
        assert (_field(_kind_of(v), tf) or {}).get("type") == "date", (v["id"], tf)


def test_kibana_chart_fields_exist_in_the_es_mappings_no_kibana_server_here(objs):
    by_id = {o["id"]: o for o in objs}
    charts = [o for o in objs if o["type"] == "lens"]
    assert len(charts) >= 5
    for lens in charts:
        state = lens["attributes"]["state"]
        layers = state["datasourceStates"]["formBased"]["layers"]
        refs = {r["name"]: r["id"] for r in lens["references"]}
        column_ids = set()
        for layer_id, layer in layers.items():
            view = by_id[refs[f"indexpattern-datasource-layer-{layer_id}"]]
            assert view["type"] == "index-pattern"
            kind = _kind_of(view)
            assert sorted(layer["columnOrder"]) == sorted(layer["columns"]), lens["id"]
            for cid, col in layer["columns"].items():
                column_ids.add(cid)
                if col["operationType"] == "count":
                    assert col["sourceField"] == "___records___"
                    continue
                mapping = _field(kind, col["sourceField"])
                where = (lens["id"], kind, col["sourceField"])
                assert mapping is not None, f"not mapped: {where}"
                assert mapping["type"] in AGGREGATABLE and mapping.get("index", True), where
                if col["operationType"] == "date_histogram":
                    assert mapping["type"] == "date", where
                if col["operationType"] in ("sum", "average", "max", "min"):
                    assert mapping["type"] in NUMERIC, where
                if col["operationType"] == "terms":
                    assert col["params"]["orderBy"]["columnId"] in layer["columns"], where
            for f in _kql_fields(state["query"]["query"]):
                assert _field(kind, f) is not None, (lens["id"], f)
        vis = state["visualization"]
        used = set()
        for layer in vis["layers"]:
            assert layer["layerId"] in layers, lens["id"]
            used |= {layer.get("xAccessor"), layer.get("splitAccessor")} - {None}
            used |= set(layer.get("accessors", []) + layer.get("primaryGroups", [])
                        + layer.get("metrics", []))
        assert used and used <= column_ids, (lens["id"], used - column_ids)


def test_kibana_saved_search_columns_and_query_are_mapped_no_kibana_server_here(objs):
    by_id = {o["id"]: o for o in objs}
    for s in (o for o in objs if o["type"] == "search"):
        source = json.loads(s["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        ref = next(r for r in s["references"] if r["name"] == source["indexRefName"])
        kind = _kind_of(by_id[ref["id"]])
        for col in s["attributes"]["columns"] + _kql_fields(source["query"]["query"]):
            assert _field(kind, col) is not None, (s["id"], col)


def test_kibana_dashboard_panels_point_at_the_charts_no_kibana_server_here(objs):
    by_id = {o["id"]: o for o in objs}
    (dash,) = [o for o in objs if o["type"] == "dashboard"]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    shown = []
    cells = set()
    for p in panels:
        ref = refs[f"{p['panelIndex']}:{p['panelRefName']}"]
        target = by_id[ref["id"]]
        assert target["type"] == ref["type"] == p["type"], p
        shown.append(target["id"])
        g = p["gridData"]
        assert g["i"] == p["panelIndex"] and 0 <= g["x"] and g["x"] + g["w"] <= 48, p
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['panelIndex']} overlaps another"
        cells |= mine
    assert len({p["panelIndex"] for p in panels}) == len(panels)
    assert len(refs) == len(panels)                           # no reference without a panel
    charts = {o["id"] for o in objs if o["type"] == "lens"}
    assert charts <= set(shown), charts - set(shown)         # every chart is on the dashboard
    titles = " | ".join(by_id[i]["attributes"]["title"] for i in shown)
    for wanted in ("Alerts over time by detector", "Top talkers", "Techniques detected",
                   "Flows by zone", "Mission availability over time", "Link state changes"):
        assert wanted in titles


def test_kibana_check_catches_an_unmapped_field_no_kibana_server_here():
    """The field check is not vacuous: a chart over a field the mappings lack fails it."""
    assert _field("flows", "source.ip")["type"] == "ip"
    assert _field("flows", "source.hostname") is None
    assert _field("alerts", "cyberrange.evidence")["index"] is False       # not aggregatable
    assert _field("ledger", "threat.technique.id")["type"] == "keyword"
    assert _kql_fields("event.kind : alert and threat.technique.id : *") == [
        "event.kind", "threat.technique.id"]
