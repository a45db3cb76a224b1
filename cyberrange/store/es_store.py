"""Elasticsearch implementation of the EventStore: the shared, distributed backend.

Addressing::

    es://HOST:PORT      plain HTTP            ess://HOST:PORT     HTTPS, certificate verified
    https://HOST:PORT   same as ess://        http://HOST:PORT    same as es://
    ...?ca=FILE&prefix=NAME&workers=4&chunk=2000&spool=DIR&auth=none&timeout=30

or a YAML file with an ``elasticsearch:`` mapping of the same keys plus ``url``.
Credentials come from the environment only: ``CYBERRANGE_ES_API_KEY``, or
``CYBERRANGE_ES_USER`` and ``CYBERRANGE_ES_PASSWORD``; ``CYBERRANGE_ES_CA`` names a CA file.
They never appear in errors, reprs or logs; a URL that carries ``user:password@`` is refused.
``auth=none`` is for a development cluster without security.

Indices: ``<prefix>-packets``, ``-flows``, ``-alerts``, ``-signals``, ``-incidents``,
``-availability``, ``-link_events``, ``-ledger`` (prefix ``cyberrange``),
created from the composable templates of ``es_mappings`` by ``init()``. Documents are ECS objects
(dotted names nested); reading flattens them again and returns the same Arrow schema as the
DuckDB store. Document ids are deterministic (see ``doc_id``), so writing the same records twice
stores them once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UserError
from .base import EventStore
from .es_config import (  # noqa: F401
    ENV_API_KEY,
    ENV_CA,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USER,
    EsConfig,
    explain,
    make_client,
)
from .es_mappings import KINDS, templates
from .runlogs import STORE_RECORD_SCHEMAS, STORE_SCHEMAS

__all__ = ["EsConfig", "ElasticsearchStore", "ENV_API_KEY", "ENV_USER", "ENV_PASSWORD", "ENV_CA",
           "ENV_URL", "open_checked", "push_run", "mirror_run"]

KEEP_ALIVE = "2m"


# ---------------------------------------------------------------------- record <-> document

def doc_id(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()


def table_docs(kind: str, table: pa.Table, index: str) -> list[tuple[bytes, bytes]]:
    """Arrow records -> bulk (action, source) lines. Dotted names are nested, nulls left out.

    Ids: flows by ``cyberrange.flow_id``, alerts and signals by ``cyberrange.alert_id``,
    incidents by ``cyberrange.incident_id``, packets by their
    whole content; each with the run id and the how-manieth occurrence of that key in this
    table, so two identical packet records stay two documents and writing the same table
    again replaces instead of adding."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")  # keeps the microseconds
        cols[name] = col.to_pylist()
    names = table.column_names
    key_col = {"flows": "cyberrange.flow_id", "alerts": "cyberrange.alert_id",
               "signals": "cyberrange.alert_id",
               "incidents": "cyberrange.incident_id"}.get(kind)
    seen: dict[str, int] = {}
    out = []
    for i in range(table.num_rows):
        src: dict = {}
        for name in names:
            v = cols[name][i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            _put(src, name, v)
        body = json.dumps(src, separators=(",", ":"), ensure_ascii=False).encode()
        run = str(cols.get("cyberrange.run_id", [None] * (i + 1))[i])
        key = cols[key_col][i] if key_col and cols[key_col][i] else body.decode()
        n = seen.get(key, 0)
        seen[key] = n + 1
        _id = doc_id(kind, run, key, str(n))
        action = json.dumps({"index": {"_index": index, "_id": _id}},
                            separators=(",", ":")).encode()
        out.append((action, body))
    return out


def ledger_docs(records: list[dict], run_id: str, index: str) -> list[tuple[bytes, bytes]]:
    """Ledger records (either spelling, ``attack.ledger``) -> bulk lines of ECS documents."""
    from ..attack.ledger import to_ecs
    out = []
    for i, rec in enumerate(records):
        flat = to_ecs(rec)
        start = flat.get("event.start")
        if isinstance(start, (int, float)):
            flat["@timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + \
                f".{int(round((start % 1) * 1e6)) % 1000000:06d}Z"
        flat.update({"event.kind": "event", "event.dataset": "cyberrange.ledger",
                     "cyberrange.run_id": run_id})
        src: dict = {}
        for key, value in flat.items():              # dotted names -> objects, as ECS nests them
            *parents, leaf = key.split(".") if key != "@timestamp" else [key]
            node = src
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        action = json.dumps({"index": {"_index": index,
                                       "_id": doc_id("ledger", run_id, str(i))}}).encode()
        out.append((action, json.dumps(src, separators=(",", ":"), default=str).encode()))
    return out


def _put(doc: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _get(doc: dict, dotted: str):
    if dotted in doc:                       # a document written with flat dotted keys
        return doc[dotted]
    node = doc
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def hits_table(sources: list[dict], schema: pa.Schema) -> pa.Table:
    """``_source`` documents -> Arrow table of ``schema``."""
    arrays = []
    for f in schema:
        vals = [_get(s, f.name) for s in sources]
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(vals, pa.string()).cast(f.type))
        elif pa.types.is_list(f.type):
            arrays.append(pa.array([v if v is None or isinstance(v, list) else [v]
                                    for v in vals], f.type))
        else:
            arrays.append(pa.array(vals, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------- the store

class ElasticsearchStore(EventStore):
    """Event store in an Elasticsearch cluster, shared by many runs and ranges."""

    def __init__(self, config: EsConfig | str, spool_dir: str | os.PathLike | None = None,
                 client=None, backoff_s: float = 0.5, sleep=time.sleep):
        self.config = config if isinstance(config, EsConfig) else EsConfig.parse(config)
        self.client = client if client is not None else make_client(self.config)
        spool = spool_dir or self.config.spool or \
            Path.home() / ".cache" / "cyberrange" / "es-spool"
        from .es_bulk import BulkWriter
        self.bulk = BulkWriter(self.client, spool, workers=self.config.workers,
                               chunk_docs=self.config.chunk,
                               chunk_bytes=int(self.config.chunk_mb * 2**20),
                               max_retries=self.config.retries, backoff_s=backoff_s,
                               sleep=sleep)

    def __repr__(self) -> str:
        return f"ElasticsearchStore({self.config.url!r}, prefix={self.config.prefix!r})"

    def index(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(KINDS)})")
        return f"{self.config.prefix}-{kind}"

    @property
    def spool_dir(self) -> Path:
        return self.bulk.spool_dir

    @spool_dir.setter
    def spool_dir(self, path) -> None:
        self.bulk.spool_dir = Path(path)

    # ------------------------------------------------------------------ cluster
    def check(self) -> dict:
        """Reach the cluster once (TLS, credentials); UserError with one line when it fails."""
        try:
            info = self.client.info()
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise UserError(explain(exc, self.config)) from None
        ver = (info.get("version") or {}).get("number", "?")
        return {"url": self.config.url, "cluster": info.get("cluster_name"), "version": ver,
                "tls": self.config.tls, "auth": self.config.auth_kind()}

    def init(self) -> dict:
        """Install the component and index templates (only those that differ) and create the
        indices that do not exist yet. Running it again changes nothing."""
        from elasticsearch import NotFoundError
        comps, idx_templates = templates(self.config.prefix)
        report = {"installed": [], "unchanged": [], "indices_created": []}
        try:
            kinds = ((comps, self.client.cluster.get_component_template,
                      self.client.cluster.put_component_template, "component_template"),
                     (idx_templates, self.client.indices.get_index_template,
                      self.client.indices.put_index_template, "index_template"))
            for bodies, get, put, key in kinds:
                for name, body in bodies.items():
                    try:
                        meta = get(name=name)[key + "s"][0][key].get("_meta", {})
                    except NotFoundError:
                        meta = {}
                    if meta.get("cyberrange_hash") == body["_meta"]["cyberrange_hash"]:
                        report["unchanged"].append(name)
                    else:
                        put(name=name, **body)
                        report["installed"].append(name)
            for kind in KINDS:
                idx = self.index(kind)
                if not self.client.indices.exists(index=idx):
                    self.client.indices.create(index=idx)
                    report["indices_created"].append(idx)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UserError(explain(exc, self.config)) from None
        return report

    # ------------------------------------------------------------------ EventStore
    def write(self, kind: str, table: pa.Table) -> int:
        """Send records (spooled when the cluster is away); returns how many the cluster
        acknowledged. Earlier spooled documents are replayed first."""
        core = _schema(kind)
        if table.num_rows == 0:
            return 0
        missing = [n for n in core.names if n not in table.column_names]
        extra = [n for n in table.column_names if n not in STORE_RECORD_SCHEMAS[kind].names]
        if missing or extra:
            raise ValueError(f"{kind}: columns do not match the schema "
                             f"(missing {missing}, unknown {extra})")
        return self.write_docs(kind, table_docs(kind, table, self.index(kind)))["acknowledged"]

    def write_docs(self, kind: str, docs) -> dict:
        if self.bulk.spooled_files():
            self.bulk.replay()
        out = self.bulk.send(docs, kind)
        if out["acknowledged"]:
            self._refresh(kind)
        return out

    def read(self, kind: str, run_id: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Records of ``kind`` in ``@timestamp`` order, paged with a point in time and
        ``search_after``; the same columns and types as the DuckDB store's ``read``."""
        core = _schema(kind)
        full = STORE_RECORD_SCHEMAS[kind]
        names = list(columns) if columns else list(core.names)
        unknown = [n for n in names if n not in full.names]
        if unknown:
            raise ValueError(f"{kind}: unknown columns {unknown}")
        schema = pa.schema([full.field(n) for n in names])
        sources = [h["_source"] for h in self.scan(kind, run_id, names)]
        table = hits_table(sources, schema) if sources else schema.empty_table()
        if table.num_rows and "@timestamp" in names:
            # Elasticsearch sorts dates by the millisecond; a stable sort on the microseconds
            # keeps its tiebreaker order and gives DuckDB's order
            table = table.take(pc.sort_indices(table, [("@timestamp", "ascending")]))
        return table

    def scan(self, kind: str, run_id: str | None = None, source: list[str] | None = None):
        """Every hit of ``kind`` (for one run), in pages: point in time + search_after."""
        from elasticsearch import NotFoundError
        try:
            pit = self.client.open_point_in_time(index=self.index(kind),
                                                 keep_alive=KEEP_ALIVE)["id"]
        except NotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise UserError(explain(exc, self.config)) from None
        after = None
        try:
            while True:
                body = dict(query=_run_query(run_id), size=self.config.page,
                            pit={"id": pit, "keep_alive": KEEP_ALIVE},
                            sort=[{"@timestamp": {"order": "asc"}}, {"_shard_doc": "asc"}],
                            track_total_hits=False)
                if source is not None:
                    body["source"] = source
                if after is not None:
                    body["search_after"] = after
                resp = self.client.search(**body)
                pit = resp.get("pit_id", pit)          # always the newest id (ES docs)
                hits = resp["hits"]["hits"]
                yield from hits
                if len(hits) < self.config.page:
                    break
                after = hits[-1]["sort"]
        finally:
            try:
                self.client.close_point_in_time(id=pit)
            except Exception:  # noqa: BLE001 - it expires on its own after keep_alive
                pass

    def count(self, kind: str, run_id: str | None = None) -> int:
        from elasticsearch import NotFoundError
        self.index(kind)
        try:
            return int(self.client.count(index=self.index(kind), query=_run_query(run_id))["count"])
        except NotFoundError:
            return 0

    def delete(self, kind: str, run_id: str) -> int:
        """Remove the records of ``kind`` for one run (delete_by_query, refreshed)."""
        from elasticsearch import NotFoundError
        try:
            resp = self.client.delete_by_query(index=self.index(kind), query=_run_query(run_id),
                                               refresh=True, conflicts="proceed")
        except NotFoundError:
            return 0
        return int(resp.get("deleted", 0))

    def replay(self) -> dict:
        """Send what is in the spool folder (see ``BulkWriter.replay``)."""
        return self.bulk.replay()

    def close(self) -> None:
        if self.client is None:
            return
        try:
            if self.bulk.spooled_files():
                try:
                    self.bulk.replay()
                except Exception:  # noqa: BLE001 - the spool stays for `store push`
                    pass
        finally:
            self.client.close()
            self.client = None

    def _refresh(self, kind: str) -> None:
        try:
            self.client.indices.refresh(index=self.index(kind))
        except Exception:  # noqa: BLE001 - visibility only; the documents are acknowledged
            pass


def _run_query(run_id: str | None) -> dict:
    if run_id is None:
        return {"match_all": {}}
    return {"bool": {"filter": [{"term": {"cyberrange.run_id": run_id}}]}}


def _schema(kind: str) -> pa.Schema:
    try:
        return STORE_SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(STORE_SCHEMAS)})"
                         ) from None


# ---------------------------------------------------------------------- a whole run

def push_run(store: ElasticsearchStore, run_id: str, packets: pa.Table | None,
             flows: pa.Table | None, alerts: pa.Table | None, ledger: list[dict] | None,
             progress=None, signals: pa.Table | None = None,
             incidents: pa.Table | None = None, availability: pa.Table | None = None,
             link_events: pa.Table | None = None) -> dict:
    """Send a run's records to the cluster (replaying its spool first) and reconcile: the
    ``es`` section of the drill's reconciliation report. ``progress(kind, done, total)``.
    ``signals``/``incidents``: the run's weak signals and incidents, when it has them;
    ``availability``/``link_events``: its run logs (``runlogs.py``), when it has them."""
    t0 = time.monotonic()
    replay = store.replay() if store.bulk.spooled_files() else {"replayed": 0, "files": 0}
    per_kind = {}
    totals = {k: 0 for k in ("sent", "acknowledged", "retried", "spooled", "rejected")}
    for kind, data in (("packets", packets), ("flows", flows), ("alerts", alerts),
                       ("signals", signals), ("incidents", incidents),
                       ("availability", availability), ("link_events", link_events),
                       ("ledger", ledger)):
        if data is None:
            continue
        if kind == "ledger":
            docs = ledger_docs(data, run_id, store.index(kind))
        else:
            docs = table_docs(kind, data, store.index(kind))
        out = store.bulk.send(docs, kind)
        if out["acknowledged"]:
            store._refresh(kind)
        per_kind[kind] = {"records": len(docs), **{k: out[k] for k in totals}}
        for k in totals:
            totals[k] += out[k]
        if progress:
            progress(kind, len(docs), len(docs))
    outstanding = store.bulk.spooled_count()
    section = {"url": store.config.url, "prefix": store.config.prefix, **totals,
               "replayed": replay["replayed"], "spool_outstanding": outstanding,
               "spool_dir": str(store.spool_dir), "per_kind": per_kind,
               "seconds": round(time.monotonic() - t0, 2)}
    if outstanding == 0 and totals["rejected"] == 0:
        # the cluster's own count, per kind, must equal the records: nothing lost, nothing doubled
        stored = {k: store.count(k, run_id) for k in per_kind}
        section["stored"] = stored
        bad = {k: (per_kind[k]["records"], n) for k, n in stored.items()
               if n != per_kind[k]["records"]}
        section["zero_loss"] = not bad
        section["verdict"] = ("every record acknowledged and counted once" if not bad else
                              "count differs (records, stored): " +
                              ", ".join(f"{k} {a}/{b}" for k, (a, b) in bad.items()))
    else:
        section["zero_loss"] = False
        section["verdict"] = (f"{outstanding} documents spooled in {store.spool_dir} "
                              f"(replayed by `cyberrange store push {run_id}` or the next write)"
                              if outstanding else "") + \
            (f"; {totals['rejected']} rejected: {'; '.join(store.bulk.errors[:2])}"
             if totals["rejected"] else "")
    return section


def open_checked(target: str, spool_dir=None, **kwargs) -> ElasticsearchStore:
    """Parse, read the credentials, make the client and reach the cluster once: every bad
    input (URL, credentials, TLS certificate, unreachable) is a UserError before any work."""
    if not target:
        raise UserError(f"no Elasticsearch cluster given: use es://HOST:PORT or set {ENV_URL}")
    store = ElasticsearchStore(EsConfig.parse(target), spool_dir=spool_dir, **kwargs)
    try:
        store.info = store.check()
    except UserError:
        store.client.close()
        raise
    return store


def mirror_run(store: ElasticsearchStore, run, packets, flows, alerts, ledger,
               signals=None, incidents=None, availability=None, link_events=None) -> dict:
    """A drill's records to the cluster at the end of ``analyse`` (DuckDB stays the run's local
    store); the spool is ``runs/<id>/es-spool``. Never raises: a failure becomes the section's
    verdict, and the spooled records wait for ``cyberrange store push``."""
    store.spool_dir = Path(run.dir) / "es-spool"
    try:
        return push_run(store, run.id, packets, flows, alerts, ledger, signals=signals,
                        incidents=incidents, availability=availability,
                        link_events=link_events)
    except Exception as exc:  # noqa: BLE001 - the drill's results are on disk whatever happens
        msg = exc.message if isinstance(exc, UserError) else explain(exc, store.config)
        return {"url": store.config.url, "zero_loss": False, "verdict": f"not sent: {msg}",
                "spool_outstanding": store.bulk.spooled_count(),
                "spool_dir": str(store.spool_dir)}
    finally:
        store.client.close()             # no replay here: the spool waits for `store push`
