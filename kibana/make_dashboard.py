"""Write ``kibana/cyberrange-dashboard.ndjson``: data views, Lens charts, one saved search and the
"cyberrange drill" dashboard, as Kibana 8.x saved objects (import: docs/elasticsearch.md).

    python kibana/make_dashboard.py          # rewrite the file
    python kibana/make_dashboard.py --check  # exit 1 when the file differs from what this makes

The objects are written here, not clicked together, so that every field a chart uses can be
checked against the index mappings (``tests/store/test_kibana_objects.py``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("cyberrange-dashboard.ndjson")
VERSION = "8.15.0"                     # the Kibana version the panels were written against
LAYER = "layer1"
KINDS = ("flows", "alerts", "packets", "signals", "incidents", "availability", "link_events",
         "ledger")


def data_view(kind: str) -> dict:
    return {"id": f"cyberrange-{kind}", "type": "index-pattern", "managed": False,
            "attributes": {"title": f"cyberrange-{kind}*", "timeFieldName": "@timestamp",
                           "name": f"cyberrange-{kind}*"},
            "references": [], "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.0.0"}


def date_col(field: str = "@timestamp") -> dict:
    return {"label": field, "dataType": "date", "operationType": "date_histogram",
            "sourceField": field, "isBucketed": True, "scale": "interval",
            "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False}}


def terms_col(field: str, label: str, order_by: str, size: int = 10, other: bool = True
              ) -> dict:
    return {"label": label, "customLabel": True, "dataType": "string", "operationType": "terms",
            "sourceField": field, "isBucketed": True, "scale": "ordinal",
            "params": {"size": size, "orderBy": {"type": "column", "columnId": order_by},
                       "orderDirection": "desc", "otherBucket": other, "missingBucket": False,
                       "parentFormat": {"id": "terms"}}}


def count_col(label: str = "Count") -> dict:
    return {"label": label, "customLabel": True, "dataType": "number", "operationType": "count",
            "sourceField": "___records___", "isBucketed": False, "scale": "ratio",
            "params": {"emptyAsNull": True}}


def sum_col(field: str, label: str) -> dict:
    return {"label": label, "customLabel": True, "dataType": "number", "operationType": "sum",
            "sourceField": field, "isBucketed": False, "scale": "ratio",
            "params": {"emptyAsNull": True}}


def lens(oid: str, title: str, kind: str, vis_type: str, visualization: dict, columns: dict,
         query: str = "") -> dict:
    state = {"visualization": visualization, "query": {"query": query, "language": "kuery"},
             "filters": [], "internalReferences": [], "adHocDataViews": {},
             "datasourceStates": {"formBased": {"layers": {LAYER: {
                 "columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}}}}}
    return {"id": oid, "type": "lens", "managed": False,
            "attributes": {"title": title, "description": "", "visualizationType": vis_type,
                           "state": state},
            "references": [{"type": "index-pattern", "id": f"cyberrange-{kind}",
                            "name": f"indexpattern-datasource-layer-{LAYER}"}],
            "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.9.0"}


def xy(oid, title, kind, columns, y, x, split=None, series="bar_stacked", query=""):
    layer = {"layerId": LAYER, "layerType": "data", "seriesType": series, "xAccessor": x,
             "accessors": [y]}
    if split:
        layer["splitAccessor"] = split
    vis = {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
           "preferredSeriesType": series, "layers": [layer]}
    return lens(oid, title, kind, "lnsXY", vis, columns, query)


def donut(oid, title, kind, columns, group, metric, query=""):
    vis = {"shape": "donut", "layers": [{
        "layerId": LAYER, "layerType": "data", "primaryGroups": [group], "metrics": [metric],
        "numberDisplay": "percent", "categoryDisplay": "default", "legendDisplay": "default"}]}
    return lens(oid, title, kind, "lnsPie", vis, columns, query)


def charts() -> list[dict]:
    return [
        xy("cyberrange-alerts-over-time", "Alerts over time by detector", "alerts",
           {"t": date_col(), "d": terms_col("rule.name", "Detector", "n"), "n": count_col("Alerts")},
           y="n", x="t", split="d", query="event.kind : alert"),
        xy("cyberrange-top-talkers", "Top talkers (bytes sent and received)", "flows",
           {"s": terms_col("source.ip", "Source", "b", size=10, other=False),
            "b": sum_col("network.bytes", "Bytes")},
           y="b", x="s", series="bar_horizontal"),
        donut("cyberrange-techniques-detected", "Techniques detected (ATT&CK, alerts)", "alerts",
              {"k": terms_col("threat.technique.id", "Technique", "n", size=20),
               "n": count_col("Alerts")}, group="k", metric="n",
              query="threat.technique.id : *"),
        xy("cyberrange-flows-by-zone", "Flows by zone (sensor)", "flows",
           {"t": date_col(), "z": terms_col("observer.name", "Sensor (zone)", "n", size=20),
            "n": count_col("Flows")}, y="n", x="t", split="z", series="area_stacked"),
        xy("cyberrange-steps-by-technique", "Attack steps by technique and outcome (ground truth)",
           "ledger",
           {"k": terms_col("threat.technique.id", "Technique", "n", size=20),
            "o": terms_col("event.outcome", "Outcome", "n", size=3),
            "n": count_col("Step executions")}, y="n", x="k", split="o"),
        xy("cyberrange-incidents-by-severity", "Incidents by severity", "incidents",
           {"t": date_col(), "s": terms_col("cyberrange.severity", "Severity", "n", size=4),
            "n": count_col("Incidents")}, y="n", x="t", split="s"),
        xy("cyberrange-availability-over-time", "Mission availability over time (probes by "
           "outcome)", "availability",
           {"t": date_col(), "o": terms_col("event.outcome", "Outcome", "n", size=2,
                                            other=False),
            "n": count_col("Probes")}, y="n", x="t", split="o"),
        xy("cyberrange-failed-probes-by-thread", "Failed mission probes by thread",
           "availability",
           {"t": date_col(), "m": terms_col("cyberrange.thread", "Thread", "n", size=20),
            "n": count_col("Failed probes")}, y="n", x="t", split="m",
           query="event.outcome : failure"),
        xy("cyberrange-link-changes", "Link state changes as monitoring sees them (DDIL)",
           "link_events",
           {"l": terms_col("cyberrange.link.name", "Link", "n", size=20),
            "s": terms_col("cyberrange.link.observed_state", "State seen", "n", size=3,
                           other=False),
            "n": count_col("Changes")}, y="n", x="l", split="s"),
    ]


def alert_list() -> dict:
    source = {"query": {"query": "event.kind : alert", "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {"id": "cyberrange-alerts-all", "type": "search", "managed": False,
            "attributes": {
                "title": "cyberrange: alerts", "description": "",
                "columns": ["rule.name", "rule.category", "threat.technique.id", "source.ip",
                            "destination.ip", "cyberrange.score", "message", "cyberrange.run_id"],
                "sort": [["@timestamp", "asc"]],
                "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)}},
            "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                            "type": "index-pattern", "id": "cyberrange-alerts"}],
            "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.0.0"}


#: (object id, x, y, w, h) on Kibana's 48-column grid
LAYOUT = [("cyberrange-alerts-over-time", 0, 0, 32, 14),
          ("cyberrange-techniques-detected", 32, 0, 16, 14),
          ("cyberrange-top-talkers", 0, 14, 24, 14),
          ("cyberrange-flows-by-zone", 24, 14, 24, 14),
          ("cyberrange-steps-by-technique", 0, 28, 24, 14),
          ("cyberrange-incidents-by-severity", 24, 28, 24, 14),
          ("cyberrange-availability-over-time", 0, 42, 24, 14),
          ("cyberrange-failed-probes-by-thread", 24, 42, 24, 14),
          ("cyberrange-link-changes", 0, 56, 48, 12),
          ("cyberrange-alerts-all", 0, 68, 48, 16)]


def dashboard(objects: dict[str, dict]) -> dict:
    panels, refs = [], []
    for n, (oid, x, y, w, h) in enumerate(LAYOUT, 1):
        p = f"p{n}"
        panels.append({"version": VERSION, "type": objects[oid]["type"], "panelIndex": p,
                       "gridData": {"x": x, "y": y, "w": w, "h": h, "i": p},
                       "embeddableConfig": {"enhancements": {}}, "panelRefName": f"panel_{p}"})
        refs.append({"name": f"{p}:panel_{p}", "type": objects[oid]["type"], "id": oid})
    return {"id": "cyberrange-drill", "type": "dashboard", "managed": False,
            "attributes": {
                "title": "cyberrange drill",
                "description": "Alerts, detections, traffic per zone, mission availability, "
                               "link changes and ground truth of drills; filter one with "
                               "cyberrange.run_id : \"<run id>\"",
                "panelsJSON": json.dumps(panels),
                "optionsJSON": json.dumps({"useMargins": True, "syncColors": False,
                                           "syncCursor": True, "syncTooltips": False,
                                           "hidePanelTitles": False}),
                "timeRestore": False, "version": 1,
                "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []})}},
            "references": refs,
            "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.9.0"}


def objects() -> list[dict]:
    out = [data_view(k) for k in KINDS] + charts() + [alert_list()]
    return out + [dashboard({o["id"]: o for o in out})]


def render() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects())


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        same = OUT.exists() and OUT.read_text() == text
        print(f"{OUT}: {'up to date' if same else 'differs: run python kibana/make_dashboard.py'}")
        sys.exit(0 if same else 1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10))} objects)")
