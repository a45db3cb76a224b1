"""Bulk ingest into Elasticsearch that loses nothing and doubles nothing.

- Documents travel in chunks (at most ``chunk_docs`` documents and ``chunk_bytes`` bytes), sent
  by ``workers`` threads at once.
- Every document has a deterministic ``_id`` and goes in with the ``index`` operation, so
  sending a document twice (a retry, a replay after a lost answer) stores it once.
- A whole request that fails on the way (connection refused or reset, timeout, 429, 502/503/504)
  is sent again with exponential back-off; in a bulk answer, only the items that failed with a
  retryable status (429, 502, 503, 504) are sent again, never the whole chunk.
- Items that fail for good (a mapping conflict, a malformed document) are not retried: they go to
  ``rejected-*.ndjson`` in the spool folder with the reason, and are counted as rejected.
- When the cluster stays unreachable after the retries, the chunk goes to the spool folder
  (``<kind>-*.ndjson``, the exact bulk lines) and so do all later chunks of that write, without
  waiting. ``replay()`` sends spooled files again and deletes each once every document in it is
  acknowledged.

``stats`` counts documents: ``sent`` (distinct documents handed to the cluster or the spool),
``acknowledged``, ``retried`` (re-sends), ``spooled``, ``replayed`` (spooled documents later
acknowledged), ``rejected``. After a write, ``sent == acknowledged + spooled + rejected`` for
that write.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError

RETRY_STATUS = frozenset({429, 502, 503, 504})

#: a document ready to send: (action line, source line), both bytes without the newline
Doc = tuple[bytes, bytes]


class ClusterDown(Exception):
    """The cluster did not answer after every retry."""


def chunks(docs: Iterable[Doc], max_docs: int, max_bytes: int) -> Iterator[list[Doc]]:
    chunk: list[Doc] = []
    size = 0
    for doc in docs:
        n = len(doc[0]) + len(doc[1]) + 2
        if chunk and (len(chunk) >= max_docs or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(doc)
        size += n
    if chunk:
        yield chunk


class BulkWriter:
    """Sends documents to ``client`` (an ``Elasticsearch``) with retries, back-off and a spool."""

    def __init__(self, client, spool_dir: str | os.PathLike | None = None, *, workers: int = 4,
                 chunk_docs: int = 2000, chunk_bytes: int = 5 * 2**20, max_retries: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0, sleep=time.sleep):
        self.client = client.options(max_retries=0)   # the retries are ours (see module doc)
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self.workers = max(1, int(workers))
        self.chunk_docs = max(1, int(chunk_docs))
        self.chunk_bytes = max(1024, int(chunk_bytes))
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.stats = {"sent": 0, "acknowledged": 0, "retried": 0, "spooled": 0, "replayed": 0,
                      "rejected": 0, "requests": 0}
        self.errors: list[str] = []            # first few reasons of rejected documents
        self.on_chunk = None                   # called with the size of each chunk done
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._seq = 0

    # ------------------------------------------------------------------ public
    def send(self, docs: Iterable[Doc], kind: str) -> dict:
        """Send ``docs``; returns this call's counts (same keys as ``stats``)."""
        before = dict(self.stats)
        self._down.clear()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="es-bulk") as pool:
            pending = set()
            for chunk in chunks(docs, self.chunk_docs, self.chunk_bytes):
                self._add(sent=len(chunk))
                pending.add(pool.submit(self._deliver, chunk, kind))
                if len(pending) >= 2 * self.workers:         # bounded memory: stream the input
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
            for f in pending:
                f.result()
        return {k: self.stats[k] - before[k] for k in self.stats}

    def spooled_files(self) -> list[Path]:
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return []
        return sorted(p for p in self.spool_dir.glob("*.ndjson")
                      if not p.name.startswith("rejected-"))

    def spooled_count(self) -> int:
        return sum(_count_lines(p) // 2 for p in self.spooled_files())

    def replay(self) -> dict:
        """Send spooled documents again, file by file; a file is deleted once all of its
        documents are acknowledged (or rejected for good). Stops at the first file the cluster
        does not take, which then holds only the documents still missing."""
        out = {"files": 0, "replayed": 0, "left": 0}
        self._down.clear()
        for path in self.spooled_files():
            docs = _read_spool(path)
            kind = path.name.split("-", 1)[0]
            before = self.stats["acknowledged"]
            left = self._deliver(docs, kind, spool=False)
            acked = self.stats["acknowledged"] - before
            self._add(replayed=acked)
            out["replayed"] += acked
            if left:
                _write_atomic(path, left)
                out["left"] = self.spooled_count()
                return out
            path.unlink()
            out["files"] += 1
        return out

    # ------------------------------------------------------------------ internals
    def _add(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                self.stats[k] += v

    def _deliver(self, docs: list[Doc], kind: str, spool: bool = True) -> list[Doc]:
        """Send one chunk until every document is acknowledged or rejected; returns what is
        left (after spooling it when ``spool``)."""
        pending = docs
        attempt = 0
        while pending:
            if self._down.is_set():
                break
            try:
                self._add(requests=1)
                resp = self.client.bulk(operations=_body(pending))
            except (TransportConnectionError, ConnectionTimeout):
                pass                                       # the whole request: again
            except ApiError as exc:
                if exc.meta.status not in RETRY_STATUS:
                    raise                                  # 401, 403, 400 ...: not transient
            else:
                retry, acked, rejected = [], 0, []
                for item, doc in zip(resp["items"], pending):
                    result = next(iter(item.values()))
                    status = int(result.get("status", 500))
                    if 200 <= status < 300:
                        acked += 1
                    elif status in RETRY_STATUS:
                        retry.append(doc)
                    else:
                        rejected.append((doc, result.get("error")))
                self._add(acknowledged=acked)
                if rejected:
                    self._reject(rejected, kind)
                pending = retry                            # only the failed items again
                if not pending:
                    break
            attempt += 1
            if attempt > self.max_retries:
                self._down.set()
                break
            self._add(retried=len(pending))
            self.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        if pending and spool:
            self._spool(pending, kind)
        if self.on_chunk is not None:
            self.on_chunk(len(docs))
        return pending

    def _spool(self, docs: list[Doc], kind: str) -> None:
        if self.spool_dir is None:
            raise ClusterDown(f"{len(docs)} {kind} documents not delivered and no spool folder")
        with self._lock:
            self._seq += 1
            name = f"{kind}-{time.time_ns()}-{os.getpid()}-{self._seq}.ndjson"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.spool_dir / name, docs)
        self._add(spooled=len(docs))

    def _reject(self, rejected: list[tuple[Doc, object]], kind: str) -> None:
        self._add(rejected=len(rejected))
        with self._lock:
            for _, err in rejected[:3]:
                if len(self.errors) < 10:
                    self.errors.append(_reason(err))
        if self.spool_dir is None:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with open(self.spool_dir / f"rejected-{kind}.ndjson", "ab") as fh:
            for (action, source), err in rejected:
                fh.write(action + b"\n" + source + b"\n")
                fh.write(json.dumps({"error": err}).encode() + b"\n")


def _reason(err) -> str:
    if isinstance(err, dict):
        return f"{err.get('type')}: {err.get('reason')}"
    return str(err)


def _body(docs: list[Doc]) -> bytes:
    return b"".join(a + b"\n" + s + b"\n" for a, s in docs)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _read_spool(path: Path) -> list[Doc]:
    lines = [ln.rstrip(b"\n") for ln in path.read_bytes().splitlines() if ln.strip()]
    return list(zip(lines[0::2], lines[1::2]))


def _write_atomic(path: Path, docs: list[Doc]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(_body(docs))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
