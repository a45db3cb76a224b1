"""The twin's name server: dnsmasq, answering for every node of the topology.

Not a Python server: the spec starts ``dnsmasq`` in the host's namespace with a hosts file of
every node's first address (``<name>.<domain>`` and ``<name>``), authoritative for the twin's
domain (``--local``), logging every query. ``cyberrange.twin.build.preflight`` checks that
dnsmasq is installed.
"""
from __future__ import annotations

from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    topo = run.topology
    hosts = run.config("dns-hosts", "".join(
        f"{itf.ip} {n.name}.{topo.domain} {n.name}\n"
        for n in topo.nodes.values() for itf in n.interfaces[:1]))
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--addn-hosts={hosts}", f"--port={run.service.port}",
            f"--listen-address={run.ip}", "--bind-interfaces", f"--domain={topo.domain}",
            f"--local=/{topo.domain}/", "--pid-file=", "--user=root",
            f"--log-facility={run.log}", "--log-queries"]


SERVICE = ServiceSpec("dns", 53, _argv, proto="udp",
                      summary="dnsmasq: the twin's names, authoritative for its domain")
