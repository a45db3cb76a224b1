"""The after-action report: a Markdown file in the run folder that reads well anywhere."""
from __future__ import annotations

from datetime import datetime, timezone


def _t(ts) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S.%f")[:-3] if ts else "—"


def _links_mode(m: dict) -> str:
    """How the twin emulated its links' delay, jitter and loss (docs/links.md)."""
    mode = (m.get("twin") or {}).get("link_emulation")
    return f"; link emulation {mode}" if mode else ""


def render(run, card: dict) -> str:
    m = run.manifest
    lines = [f"# After-action report: {m.get('run_id')}", "",
             f"Topology **{m.get('topology')}**, playbook **{m.get('playbook') or '— (benign only)'}**, "
             f"detectors {', '.join(m.get('detectors') or [])}"
             + _links_mode(m) + ".", ""]
    lines += ["## Attack steps", "",
              "| step | technique | outcome | detected | time to detect | detected by | attack flows "
              "| reason |",
              "|---|---|---|---|---:|---|---:|---|"]
    for s in card.get("steps", []):
        ttd = "—" if s.get("time_to_detect_s") is None else f"{s['time_to_detect_s']:.1f} s"
        det = ("not observable" if s.get("observable") is False
               else "yes" if s.get("detected") else
               f"late ({s['late_detect_s']:.1f} s)" if s.get("detected_late")
               and isinstance(s.get("late_detect_s"), (int, float)) else "**no**")
        why = s.get("reason") or s.get("unobservable") or ""     # RF jamming: why unseen
        reason = " ".join(str(why).split()).replace("|", "\\|") or "—"
        lines.append(f"| {s['step_id']} | {s.get('technique')} | {s.get('outcome')} | "
                     f"{det} | {ttd} | "
                     f"{', '.join(s.get('detected_by') or []) or '—'} | {s.get('attack_flows', 0)} "
                     f"| {reason} |")
    lines += _incidents(card.get("incidents"))
    f, a = card.get("flows", {}), card.get("alerts", {})
    lines += ["", "## Flows and alerts", "",
              "| measure | value |", "|---|---:|",
              f"| flows | {f.get('total')} |", f"| attack flows | {f.get('attack')} |",
              f"| benign flows | {f.get('benign')} |",
              f"| flagged attack / benign flows | {f.get('flagged_attack')} / {f.get('flagged_benign')} |",
              f"| precision | {f.get('precision')} |", f"| recall | {f.get('recall')} |",
              f"| alerts true / false | {a.get('true')} / {a.get('false')} |"]
    by = a.get("by_detector") or {}
    if by:
        lines += ["", "| detector | alerts | true | false |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v.get('total')} | {v.get('true')} | {v.get('false')} |"
                  for k, v in sorted(by.items())]
    rec = card.get("reconciliation") or {}
    if rec:
        lines += ["", "## Capture reconciliation", "",
                  f"Attack packets in the ledger: {rec.get('ledger_packets')}; found in the store "
                  f"for the same 5-tuples: {rec.get('stored_packets')} over {rec.get('five_tuples')} "
                  "5-tuples.", ""]
        if "verdict" in rec:
            lines += [f"Verdict: **{rec['verdict']}**.", ""]
        rows = rec.get("per_sensor") or []
        if rows:
            lines += ["| sensor | kind | attack sent (ledger) | attack stored | benign logged | "
                      "captured (tcpdump) | pcap frames | kernel drops | stored | files | verdict |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in rows:
                benign = (f"{r['benign_packets']} packets" if r.get("benign_packets") is not None
                          else f"{r.get('benign_requests', 0)} requests")
                lines.append(
                    f"| {r['sensor']} | {r.get('kind') or ''} | {r.get('attack_ledger')} | "
                    f"{r.get('attack_stored')} | {benign} | {r.get('captured')} | "
                    f"{r.get('pcap_frames')} | {r.get('kernel_drops')} | {r.get('stored')} | "
                    f"{r.get('files')} | {'zero loss' if r.get('zero_loss') else r.get('verdict')} |")
        else:
            sensors = rec.get("sensors") or {}
            if sensors:
                lines += ["| sensor | captured | dropped by kernel |", "|---|---:|---:|"]
                lines += [f"| {k} | {v.get('captured')} | {v.get('dropped_by_kernel')} |"
                          for k, v in sorted(sensors.items())]
        live = rec.get("live") or {}
        if live:
            lines += ["", f"Live mode: {live.get('files_ingested')} files ingested during the "
                      f"drill, {live.get('packets_stored_live')} packet records stored live "
                      f"(largest lag {live.get('max_lag_s')} s); the final store was rebuilt from "
                      "the pcaps."]
    lines += _link_events(run)
    tm = m.get("timings") or {}
    lines += ["", "## Timings", "", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in tm.items()]
    for w in m.get("warnings") or []:
        lines += ["", f"> warning: {w}"]
    return "\n".join(lines) + "\n"


def _link_events(run) -> list[str]:
    """The DDIL link changes of the run (docs/links.md) and the mission probes while a link
    was not up."""
    from cyberrange.report.content import availability, link_events, read_jsonl
    run_dir = getattr(run, "dir", None)           # a run object without a folder: none
    if run_dir is None or not (run_dir / "logs" / "links.jsonl").exists():
        return []
    path = run_dir / "logs" / "links.jsonl"
    notes: list[str] = []
    avail = availability({}, read_jsonl(run_dir / "availability.jsonl", "availability probes",
                                        notes))
    rows = link_events(read_jsonl(path, "link events", notes), avail) or []
    t0 = min((r["time"] for r in rows), default=0)
    out = ["", "## Link events", "",
           "| at | zone | state | values | lasted | missions while not up (ok/probes) | reason |",
           "|---:|---|---|---|---:|---|---|"]
    for r in rows:
        vals = ", ".join(f"{k} {v:g}" for k, v in r["values"].items()) or "—"
        lasted = "—" if r["until"] is None else f"{r['until'] - r['time']:.1f} s"
        miss = ", ".join(f"{k} {ok}/{n}" for k, (ok, n) in sorted(r["missions"].items()))
        why = " ".join(str(r.get("reason") or "—").split()).replace("|", "\\|")
        out.append(f"| +{r['time'] - t0:.1f} s | {r['zone']} | {r['state']} | {vals} | {lasted} "
                   f"| {miss or '—'} | {why} |")
    return out + [f"> {n}" for n in notes]


def _incidents(sec) -> list[str]:
    """The incidents (docs/incidents.md): one row each, then its explanation lines."""
    if not isinstance(sec, dict):
        return []
    verdict = {True: "the playbook became an incident",
               False: "the playbook became **no** incident",
               None: "no attack step to find"}[sec.get("is_incident")]
    head = (f"{sec.get('total', 0)} incidents ({sec.get('true', 0)} true, "
            f"{sec.get('false', 0)} false): {verdict}; {sec.get('steps_in_incidents', 0)} of "
            f"{sec.get('steps_observable', 0)} observable steps in incidents.")
    lines = ["", "## Incidents", "", head]
    rows = sec.get("list") or []
    if rows:
        lines += ["", ("| incident | severity | score | kill chain | hosts | alerts | signals "
                       "| true | steps |"), "|---|---|---:|---|---|---:|---:|---|---|"]
    for r in rows:
        hosts = " ⇒ ".join(dict.fromkeys([(r.get("entities") or ["?"])[0]]
                                         + [p["host"] for p in r.get("pivots") or []]))
        lines.append(f"| {r['incident_id'][:8]} | {r['severity']} | {r['score']:.2f} | "
                     f"{' → '.join(r.get('stages') or []) or '—'} | {hosts} | {r['alerts']} | "
                     f"{r['signals']} | {'yes' if r.get('true') else 'no'} | "
                     f"{', '.join(r.get('steps') or []) or '—'} |")
    for r in rows:
        lines += ["", f"**{r['incident_id'][:8]}** {r['summary']}", ""]
        lines += [f"- {x}".replace("|", "\\|") for x in r.get("explanation") or []]
    return lines


def write_report(run, card: dict, path=None):
    """Write the report (into ``path``, default ``RUN/report.md``) and return where it went."""
    from pathlib import Path
    path = Path(path) if path is not None else run.dir / "report.md"
    path.write_text(render(run, card))
    return path
