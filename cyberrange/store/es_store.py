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

Indices: ``<prefix>-packets``, ``-flows``, ``-alerts``, ``-ledger`` (prefix ``cyberrange``),
created from the composable templates of ``es_mappings`` by ``init()``. Documents are ECS objects
(dotted names nested); reading flattens them again and returns the same Arrow schema as the
DuckDB store. Document ids are deterministic (see ``doc_id``), so writing the same records twice
stores them once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UserError
from ..telemetry.schema import RECORD_SCHEMAS, SCHEMAS
from .base import EventStore
from .es_mappings import KINDS, templates

__all__ = ["EsConfig", "ElasticsearchStore", "ENV_API_KEY", "ENV_USER", "ENV_PASSWORD", "ENV_CA",
           "ENV_URL", "open_checked", "push_run", "mirror_run"]

ENV_API_KEY = "CYBERRANGE_ES_API_KEY"
ENV_USER = "CYBERRANGE_ES_USER"
ENV_PASSWORD = "CYBERRANGE_ES_PASSWORD"
ENV_CA = "CYBERRANGE_ES_CA"
ENV_URL = "CYBERRANGE_ES_URL"

# the transport logs each failed attempt with a traceback; with no logging set up Python would
# print those to stderr (the CLI promises one line). A configured root logger still gets them.
logging.getLogger("elastic_transport").addHandler(logging.NullHandler())

SCHEMES = {"es": "http", "elasticsearch": "http", "http": "http", "ess": "https",
           "https": "https"}
OPTIONS = ("ca", "prefix", "workers", "chunk", "chunk_mb", "spool", "auth", "timeout",
           "page", "retries")
PAGE = 5000
KEEP_ALIVE = "2m"


@dataclass
class EsConfig:
    """Where and how to reach a cluster. ``repr`` shows no secret (there is none in it: the
    credentials are read from the environment when the client is made)."""
    url: str                              # scheme://host:port, no credentials
    ca: str | None = None
    prefix: str = "cyberrange"
    workers: int = 4
    chunk: int = 2000
    chunk_mb: float = 5.0
    spool: str | None = None
    auth: str = "env"                     # env | none
    timeout: float = 30.0
    page: int = PAGE
    retries: int = 5
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, target: str) -> "EsConfig":
        """An ``es://`` URL (or http/https/ess) or a YAML config file -> EsConfig; UserError
        on anything malformed."""
        if "://" not in target and target.endswith((".yaml", ".yml")):
            return cls.from_file(target)
        try:
            parts = urlsplit(target)
            port = parts.port
        except ValueError as exc:
            raise UserError(f"malformed Elasticsearch URL: {exc}") from None
        scheme = SCHEMES.get(parts.scheme)
        if scheme is None:
            raise UserError(f"unknown Elasticsearch URL scheme {parts.scheme!r} "
                            "(use es://HOST:PORT, or ess://HOST:PORT for TLS)")
        if parts.username or parts.password:
            raise UserError("credentials in the Elasticsearch URL are refused (they would show in "
                            f"shell history and process lists): set {ENV_API_KEY}, or "
                            f"{ENV_USER} and {ENV_PASSWORD}")
        host = parts.hostname
        if not host:
            raise UserError("malformed Elasticsearch URL: no host (expected es://HOST:PORT)")
        if ":" not in host and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise UserError(f"malformed Elasticsearch URL: bad host name {host!r}")
        if parts.path not in ("", "/"):
            raise UserError(f"malformed Elasticsearch URL: unexpected path {parts.path!r} "
                            "(expected es://HOST:PORT?option=value)")
        opts = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            opts[k] = v
        netloc = f"[{host}]" if ":" in host else host
        return cls._build(f"{scheme}://{netloc}:{port or 9200}", opts, "URL")

    @classmethod
    def from_file(cls, path: str) -> "EsConfig":
        import yaml
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise UserError(f"cannot read Elasticsearch config: {exc.strerror}", file=path) from None
        except yaml.YAMLError as exc:
            raise UserError(f"not valid YAML: {exc}", file=path) from None
        section = data.get("elasticsearch") if isinstance(data, dict) else None
        if not isinstance(section, dict) or "url" not in section:
            raise UserError("expected a mapping 'elasticsearch:' with a 'url'", file=path)
        section = dict(section)
        for secret in ("api_key", "password", "user", "username"):
            if secret in section:
                raise UserError(f"'{secret}' does not belong in a config file: set {ENV_API_KEY},"
                                f" or {ENV_USER} and {ENV_PASSWORD}", file=path)
        base = cls.parse(str(section.pop("url")))
        if base.extra:
            section = {**base.extra, **section}
        opts = {k: str(v) for k, v in section.items()}
        if base.ca and "ca" not in opts:
            opts["ca"] = base.ca
        return cls._build(base.url, opts, path)

    @classmethod
    def _build(cls, url: str, opts: dict, where: str) -> "EsConfig":
        unknown = [k for k in opts if k not in OPTIONS]
        if unknown:
            raise UserError(f"unknown Elasticsearch option {unknown[0]!r} in {where} "
                            f"(known: {', '.join(OPTIONS)})")
        cfg = cls(url=url, extra=dict(opts))
        try:
            for key, conv in (("workers", int), ("chunk", int), ("chunk_mb", float),
                              ("timeout", float), ("page", int), ("retries", int)):
                if key in opts:
                    setattr(cfg, key, conv(opts[key]))
        except ValueError:
            raise UserError(f"Elasticsearch option {key}={opts[key]!r} is not a number") from None
        if cfg.workers < 1 or cfg.chunk < 1 or cfg.page < 1:
            raise UserError("Elasticsearch options workers, chunk and page must be at least 1")
        cfg.prefix = opts.get("prefix", cfg.prefix)
        if not cfg.prefix or cfg.prefix != cfg.prefix.lower() or any(
                c in cfg.prefix for c in ' "*\\<|,>/?#:'):
            raise UserError(f"Elasticsearch index prefix {cfg.prefix!r} is not a valid index name "
                            "(lowercase, no spaces or * \" \\ < | , > / ? # :)")
        cfg.spool = opts.get("spool")
        cfg.auth = opts.get("auth", "env")
        if cfg.auth not in ("env", "none"):
            raise UserError(f"Elasticsearch option auth={cfg.auth!r}: use auth=none for a cluster "
                            "without security, or leave it out (credentials from the environment)")
        cfg.ca = opts.get("ca") or os.environ.get(ENV_CA) or None
        if cfg.ca and not Path(cfg.ca).is_file():
            raise UserError(f"CA file not found: {cfg.ca}")
        return cfg

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    def credentials(self) -> dict:
        """Client keyword arguments for authentication, from the environment."""
        if self.auth == "none":
            return {}
        api_key = os.environ.get(ENV_API_KEY)
        user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
        if api_key:
            return {"api_key": api_key}
        if user and password:
            return {"basic_auth": (user, password)}
        if user or password:
            missing = ENV_PASSWORD if user else ENV_USER
            raise UserError(f"incomplete Elasticsearch credentials: {missing} is not set")
        raise UserError(f"no Elasticsearch credentials: set {ENV_API_KEY}, or {ENV_USER} and "
                        f"{ENV_PASSWORD} (or add ?auth=none for a cluster without security)")

    def auth_kind(self) -> str:
        if self.auth == "none":
            return "none"
        return "api_key" if os.environ.get(ENV_API_KEY) else "basic"


def make_client(cfg: EsConfig):
    from elasticsearch import Elasticsearch
    kwargs: dict = dict(cfg.credentials(), request_timeout=cfg.timeout, max_retries=2,
                        retry_on_timeout=True, retry_on_status=(502, 503, 504))
    if cfg.tls:
        kwargs["verify_certs"] = True
        if cfg.ca:
            kwargs["ca_certs"] = cfg.ca
    return Elasticsearch(cfg.url, **kwargs)


def explain(exc: BaseException, cfg: EsConfig) -> str:
    """One line that says why talking to the cluster failed (no secret in it)."""
    from elastic_transport import ConnectionError as CE
    from elastic_transport import ConnectionTimeout, TlsError
    from elasticsearch import ApiError, AuthenticationException, AuthorizationException
    where = f"Elasticsearch at {cfg.url}"
    cause = exc
    while cause is not None:
        if isinstance(cause, (ssl.SSLCertVerificationError, TlsError)) or \
                "CERTIFICATE_VERIFY_FAILED" in str(cause):
            detail = getattr(cause, "verify_message", None) or "certificate verify failed"
            hint = ("give the cluster's CA with ?ca=FILE or " + ENV_CA) if not cfg.ca \
                else f"it is not signed by {cfg.ca}"
            return f"TLS certificate of {where} refused ({detail}): {hint}"
        cause = cause.__cause__ or (cause.errors[0] if getattr(cause, "errors", None) else None)
    if isinstance(exc, AuthenticationException):
        return f"{where} refused the credentials (HTTP 401, {cfg.auth_kind()} from the environment)"
    if isinstance(exc, AuthorizationException):
        return f"{where}: the user has no right to do this (HTTP 403)"
    if isinstance(exc, ConnectionTimeout):
        return f"{where} did not answer within {cfg.timeout:g} s"
    if isinstance(exc, CE):
        text = str(exc)
        if "refused" in text.lower():
            return f"cannot reach {where}: connection refused"
        return f"cannot reach {where}: {type(exc).__name__}"
    if isinstance(exc, ApiError):
        return f"{where} answered HTTP {exc.meta.status}: {exc.message}"
    return f"{where}: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- record <-> document

def doc_id(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()


def table_docs(kind: str, table: pa.Table, index: str) -> list[tuple[bytes, bytes]]:
    """Arrow records -> bulk (action, source) lines. Dotted names are nested, nulls left out.

    Ids: flows by ``cyberrange.flow_id``, alerts by ``cyberrange.alert_id``, packets by their
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
    key_col = {"flows": "cyberrange.flow_id", "alerts": "cyberrange.alert_id"}.get(kind)
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
    out = []
    for i, rec in enumerate(records):
        src = dict(rec)
        start = rec.get("start")
        if isinstance(start, (int, float)):
            src["@timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + \
                f".{int(round((start % 1) * 1e6)) % 1000000:06d}Z"
        src["event"] = {"kind": "event", "dataset": "cyberrange.ledger"}
        src["cyberrange"] = {"run_id": run_id}
        src.pop("run_id", None)
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
        extra = [n for n in table.column_names if n not in RECORD_SCHEMAS[kind].names]
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
        full = RECORD_SCHEMAS[kind]
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
        return SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(SCHEMAS)})") from None


# ---------------------------------------------------------------------- a whole run

def push_run(store: ElasticsearchStore, run_id: str, packets: pa.Table | None,
             flows: pa.Table | None, alerts: pa.Table | None, ledger: list[dict] | None,
             progress=None) -> dict:
    """Send a run's records to the cluster (replaying its spool first) and reconcile: the
    ``es`` section of the drill's reconciliation report. ``progress(kind, done, total)``."""
    t0 = time.monotonic()
    replay = store.replay() if store.bulk.spooled_files() else {"replayed": 0, "files": 0}
    per_kind = {}
    totals = {k: 0 for k in ("sent", "acknowledged", "retried", "spooled", "rejected")}
    for kind, data in (("packets", packets), ("flows", flows), ("alerts", alerts),
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


def mirror_run(store: ElasticsearchStore, run, packets, flows, alerts, ledger) -> dict:
    """A drill's records to the cluster at the end of ``analyse`` (DuckDB stays the run's local
    store); the spool is ``runs/<id>/es-spool``. Never raises: a failure becomes the section's
    verdict, and the spooled records wait for ``cyberrange store push``."""
    store.spool_dir = Path(run.dir) / "es-spool"
    try:
        return push_run(store, run.id, packets, flows, alerts, ledger)
    except Exception as exc:  # noqa: BLE001 - the drill's results are on disk whatever happens
        msg = exc.message if isinstance(exc, UserError) else explain(exc, store.config)
        return {"url": store.config.url, "zero_loss": False, "verdict": f"not sent: {msg}",
                "spool_outstanding": store.bulk.spooled_count(),
                "spool_dir": str(store.spool_dir)}
    finally:
        store.client.close()             # no replay here: the spool waits for `store push`
