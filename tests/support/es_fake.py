"""A local HTTP endpoint that speaks enough of the Elasticsearch 8 REST API for protocol tests.

It is NOT Elasticsearch: it stores documents in dicts and answers with the documented response
shapes (info, component/index templates, index create/exists, _bulk with per-item results,
_pit, _search with pit + search_after + sort, _count, _delete_by_query, _refresh), with the
``X-Elastic-Product: Elasticsearch`` header the official client checks. Every request is
recorded (method, path, query, headers with lowercase names, parsed body) so tests can assert what the client sent.

Faults, for the resilience tests:
- ``item_faults``: {doc id: [status, ...]}: the next bulk items with that id fail with those
  statuses in turn (429 -> es_rejected_execution_exception, 400 -> mapper_parsing_exception,
  503 -> unavailable_shards_exception), then succeed.
- ``down()``: new connections are refused (listener closed) and open keep-alive connections are
  dropped without an answer; ``up()`` listens on the same port again with the data kept.
- ``down_after_bulks = n``: after n bulk requests the endpoint goes down by itself;
  ``apply_then_drop``: that last bulk is applied but its answer is lost (the connection drops),
  as when a node dies after indexing.
- ``status_all = 503``: every request answers that status.
- ``require_auth``: ("apikey", KEY) or ("basic", user, password): 401 otherwise.
- ``tls=True``: HTTPS with a self-signed certificate made at start (``ca_pem`` has it).

Sorting follows Elasticsearch: dates sort by their millisecond value, and ``_shard_doc`` (the
order documents were indexed in) breaks ties; sort values are returned in each hit.
"""
from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import http.server
import json
import secrets
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
ITEM_ERRORS = {
    429: ("es_rejected_execution_exception",
          "rejected execution of coordinating operation [queue capacity = 200]"),
    400: ("document_parsing_exception", "failed to parse field [source.ip] of type [ip]"),
    503: ("unavailable_shards_exception", "primary shard is not active"),
}


def _millis(value) -> int:
    """A date as Elasticsearch sorts it: milliseconds since the epoch (the rest cut off)."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).replace("Z", "+00:00")
    if "." in text:                                  # fromisoformat: at most 6 digits
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    d = dt.datetime.fromisoformat(text)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return (d - EPOCH) // dt.timedelta(milliseconds=1)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _get(doc: dict, dotted: str):
    if dotted in doc:
        return doc[dotted]
    node = doc
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _matches(doc: dict, query: dict | None) -> bool:
    if not query or "match_all" in query:
        return True
    if "term" in query:
        (field, cond), = query["term"].items()
        want = cond["value"] if isinstance(cond, dict) else cond
        have = _get(doc, field)
        return want in have if isinstance(have, list) else have == want
    if "terms" in query:
        (field, wants), = query["terms"].items()
        return _get(doc, field) in wants
    if "bool" in query:
        b = query["bool"]
        musts = (b.get("filter") or []) + (b.get("must") or [])
        musts = musts if isinstance(musts, list) else [musts]
        nots = b.get("must_not") or []
        return all(_matches(doc, q) for q in musts) and \
            not any(_matches(doc, q) for q in (nots if isinstance(nots, list) else [nots]))
    raise ValueError(f"fake endpoint does not know query {query}")


def _filter_source(doc: dict, includes) -> dict:
    if includes is None or includes is True:
        return doc
    if includes is False:
        return {}
    if isinstance(includes, str):
        includes = [includes]
    out: dict = {}
    for name in includes:
        v = _get(doc, name)
        if v is None:
            continue
        node = out
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def make_cert(tmp: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cyberrange-fake-es")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "fake-es.crt", tmp / "fake-es.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeES:
    def __init__(self, tls: bool = False, require_auth: tuple | None = None):
        self.tls = tls
        self.require_auth = require_auth
        self.lock = threading.RLock()
        self.requests: list[dict] = []
        self.indices: dict[str, dict[str, tuple[int, dict]]] = {}
        self.component_templates: dict[str, dict] = {}
        self.index_templates: dict[str, dict] = {}
        self.pits: dict[str, list[tuple[str, str, int, dict]]] = {}
        self.item_faults: dict[str, list[int]] = {}
        self.status_all: int | None = None
        self.down_after_bulks: int | None = None
        self.apply_then_drop = False
        self.bulk_requests = 0
        self._seq = 0
        self._down = False
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-es-")
        self.cert = self.key = None
        if tls:
            self.cert, self.key = make_cert(Path(self._tmp.name))
        self.port = 0
        self._server = None
        self.up()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def up(self) -> None:
        with self.lock:
            self._down = False
        server = _Server(("127.0.0.1", self.port), self._handler())
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self._down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()
        self._tmp.cleanup()

    # ------------------------------------------------------------------ inspection
    def docs(self, index: str) -> dict[str, dict]:
        with self.lock:
            return {i: d for i, (_, d) in self.indices.get(index, {}).items()}

    def paths(self, method: str | None = None) -> list[str]:
        return [r["path"] for r in self.requests if method is None or r["method"] == method]

    # ------------------------------------------------------------------ HTTP
    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status: int, body, headers=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in {**PRODUCT, **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self):
                raw = self._body()
                if fake._down:
                    self.close_connection = True
                    return                      # no answer: the client sees a dropped line
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                ctype = self.headers.get("Content-Type", "")
                if "ndjson" in ctype:
                    body = [json.loads(ln) for ln in raw.splitlines() if ln.strip()]
                else:
                    body = json.loads(raw) if raw else None
                with fake.lock:
                    fake.requests.append({"method": self.command, "path": parts.path,
                                          "query": query, "body": body,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                if fake.status_all:
                    return self._send(fake.status_all, _error(
                        fake.status_all, "unavailable_shards_exception", "cluster is unhealthy"))
                if fake.require_auth and not self._authorised():
                    return self._send(401, _error(401, "security_exception",
                                                  "unable to authenticate user"),
                                      {"WWW-Authenticate": 'Basic realm="security"'})
                status, resp, drop = fake.route(self.command, parts.path, query, body)
                if drop:
                    self.close_connection = True
                    return
                self._send(status, resp)

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                kind = fake.require_auth[0]
                if kind == "apikey":
                    return auth == f"ApiKey {fake.require_auth[1]}"
                user, pw = fake.require_auth[1:]
                return auth == "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return Handler

    # ------------------------------------------------------------------ API
    def route(self, method: str, path: str, query: dict, body):
        seg = [s for s in path.split("/") if s]
        if not seg:
            return 200, INFO, False
        if seg[0] == "_component_template":
            return self._template(method, seg[1], body, self.component_templates,
                                  "component_templates", "component_template")
        if seg[0] == "_index_template":
            return self._template(method, seg[1], body, self.index_templates,
                                  "index_templates", "index_template")
        if seg[-1] == "_bulk":
            return self._bulk(body, seg[0] if len(seg) > 1 else None)
        if seg[0] == "_pit" and method == "DELETE":
            with self.lock:
                freed = 1 if self.pits.pop(body["id"], None) is not None else 0
            return 200, {"succeeded": True, "num_freed": freed}, False
        if seg[0] == "_search":
            return self._search(body or {})
        if len(seg) == 2 and seg[1] == "_pit":
            return self._open_pit(seg[0])
        if len(seg) == 2 and seg[1] == "_count":
            names = self._resolve(seg[0])
            if names is None:
                return _missing(seg[0])
            q = (body or {}).get("query")
            n = sum(1 for i in names for _, d in self.indices[i].values() if _matches(d, q))
            return 200, {"count": n, "_shards": SHARDS}, False
        if len(seg) == 2 and seg[1] == "_delete_by_query":
            return self._delete_by_query(seg[0], (body or {}).get("query"))
        if len(seg) == 2 and seg[1] == "_refresh":
            return 200, {"_shards": SHARDS}, False
        if len(seg) == 1 and method == "HEAD":
            return (200 if self._resolve(seg[0]) else 404), None, False
        if len(seg) == 1 and method == "PUT":
            with self.lock:
                if seg[0] in self.indices:
                    return 400, _error(400, "resource_already_exists_exception",
                                       f"index [{seg[0]}] already exists"), False
                self.indices[seg[0]] = {}
            return 200, {"acknowledged": True, "shards_acknowledged": True,
                         "index": seg[0]}, False
        return 400, _error(400, "illegal_argument_exception",
                           f"fake endpoint: no handler for {method} {path}"), False

    def _template(self, method, name, body, store, plural, singular):
        with self.lock:
            if method == "PUT":
                store[name] = body
                return 200, {"acknowledged": True}, False
            if name not in store:
                return 404, _error(404, "resource_not_found_exception",
                                   f"{singular} matching [{name}] not found"), False
            return 200, {plural: [{"name": name, singular: store[name]}]}, False

    def _resolve(self, expr: str):
        names = []
        for part in expr.split(","):
            hit = [i for i in self.indices if fnmatch.fnmatch(i, part)]
            if not hit and "*" not in part:
                return None
            names += hit
        return names

    def _bulk(self, lines, default_index):
        with self.lock:
            self.bulk_requests += 1
            last = self.down_after_bulks is not None and \
                self.bulk_requests >= self.down_after_bulks
            if last:
                self.down_after_bulks = None
        if last:
            threading.Thread(target=self.down, daemon=True).start()
            if not self.apply_then_drop:
                return 200, None, True            # lost on the way: nothing applied
        items, errors = [], False
        it = iter(lines or [])
        for action in it:
            (op, meta), = action.items()
            src = next(it) if op != "delete" else None
            index = meta.get("_index", default_index)
            _id = meta.get("_id") or secrets.token_hex(10)
            with self.lock:
                faults = self.item_faults.get(_id)
                status = faults.pop(0) if faults else None
                if faults == []:
                    del self.item_faults[_id]
            if status is not None:
                errors = True
                etype, reason = ITEM_ERRORS.get(status, ("exception", "failure"))
                items.append({op: {"_index": index, "_id": _id, "status": status,
                                   "error": {"type": etype, "reason": reason,
                                             "index": index}}})
                continue
            with self.lock:
                idx = self.indices.setdefault(index, {})
                existed = _id in idx
                self._seq += 1
                seq = idx[_id][0] if existed else self._seq
                idx[_id] = (seq, src)
            items.append({op: {"_index": index, "_id": _id, "_version": 1,
                               "result": "updated" if existed else "created",
                               "_shards": {"total": 1, "successful": 1, "failed": 0},
                               "_seq_no": seq, "_primary_term": 1,
                               "status": 200 if existed else 201}})
        return 200, {"took": 3, "errors": errors, "items": items}, last

    def _open_pit(self, expr):
        with self.lock:
            names = self._resolve(expr)
            if names is None:
                return _missing(expr)
            snapshot = sorted(((i, _id, seq, d) for i in names
                               for _id, (seq, d) in self.indices[i].items()),
                              key=lambda x: x[2])
            pit = base64.b64encode(secrets.token_bytes(24)).decode()
            self.pits[pit] = snapshot
        return 200, {"id": pit, "_shards": SHARDS}, False

    def _search(self, body):
        pit = (body.get("pit") or {}).get("id")
        with self.lock:
            if pit not in self.pits:
                return 404, _error(404, "search_context_missing_exception",
                                   "No search context found for id"), False
            snapshot = self.pits.pop(pit)
            new_pit = base64.b64encode(secrets.token_bytes(24)).decode()   # ids may change
            self.pits[new_pit] = snapshot
        sort = body.get("sort") or [{"_shard_doc": "asc"}]
        keys = []
        for s in sort:
            (field, how), = (s.items() if isinstance(s, dict) else [(s, "asc")])
            order = how.get("order", "asc") if isinstance(how, dict) else how
            keys.append((field, order))

        def sort_values(entry):
            _, _, seq, d = entry
            out = []
            for field, _ in keys:
                if field == "_shard_doc":
                    out.append(seq)
                elif field == "@timestamp" or field.endswith((".start", ".end")):
                    v = _get(d, field)
                    out.append(_millis(v) if v is not None else -(2**63))
                else:
                    out.append(_get(d, field))
            return out

        def cmp_key(vals):
            return [v if o == "asc" else -v for v, (_, o) in zip(vals, keys)]

        query = body.get("query")
        rows = [(sort_values(e), e) for e in snapshot if _matches(e[3], query)]
        rows.sort(key=lambda r: cmp_key(r[0]))
        after = body.get("search_after")
        if after is not None:
            rows = [r for r in rows if cmp_key(r[0]) > cmp_key(after)]
        size = int(body.get("size", 10))
        src_filter = body.get("_source")
        hits = [{"_index": e[0], "_id": e[1], "_score": None,
                 "_source": _filter_source(e[3], src_filter), "sort": vals}
                for vals, e in rows[:size]]
        total = {"value": len(rows), "relation": "eq"}
        return 200, {"pit_id": new_pit, "took": 2, "timed_out": False, "_shards": SHARDS,
                     "hits": {"total": total, "max_score": None, "hits": hits}}, False

    def _delete_by_query(self, expr, query):
        with self.lock:
            names = self._resolve(expr)
            if names is None:
                return _missing(expr)
            n = 0
            for i in names:
                for _id in [k for k, (_, d) in self.indices[i].items() if _matches(d, query)]:
                    del self.indices[i][_id]
                    n += 1
        return 200, {"took": 5, "timed_out": False, "total": n, "deleted": n, "batches": 1,
                     "version_conflicts": 0, "noops": 0,
                     "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                     "requests_per_second": -1.0, "throttled_until_millis": 0,
                     "failures": []}, False


SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
INFO = {"name": "fake-node-1", "cluster_name": "cyberrange-fake", "cluster_uuid": "fAkEuUiD",
        "version": {"number": "8.15.0", "build_flavor": "default", "build_type": "docker",
                    "build_hash": "0" * 40, "build_date": "2024-08-05T10:05:34.233336849Z",
                    "build_snapshot": False, "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0"},
        "tagline": "You Know, for Search"}


def _error(status, etype, reason, **extra):
    err = {"type": etype, "reason": reason, **extra}
    return {"error": {"root_cause": [err], **err}, "status": status}


def _missing(index):
    return 404, _error(404, "index_not_found_exception", f"no such index [{index}]",
                       index=index, **{"resource.type": "index_or_alias",
                                       "resource.id": index}), False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float = 5.0) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False
