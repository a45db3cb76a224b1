"""The service types a topology may give a host, discovered from the modules of this package.

Each module of ``cyberrange.services`` is one real server the twin runs on hosts (``python -m
cyberrange.services.<module>``; ``dns`` is dnsmasq) and declares at its top the
:class:`~cyberrange.services.spec.ServiceSpec` of the type(s) it implements. A new service type
is a new module here (plus its line in the topology schema's enum, which a test compares with
this registry, and docs). The model reads the declarative half (types, default protocol, attack
path weight), the twin the ``argv`` half; neither is written anywhere else.

Importing this imports every service module: they keep heavy imports (paramiko) inside the
functions that serve, so that loading a topology stays cheap.
"""
from __future__ import annotations

from cyberrange.discover import package_modules
from cyberrange.services.spec import DEFAULT_WEIGHT, Launch, ServiceSpec

__all__ = ["SERVICES", "SERVICE_TYPES", "UDP_SERVICES", "SERVICE_WEIGHT", "DEFAULT_WEIGHT",
           "Launch", "ServiceSpec"]


def _discover() -> dict[str, ServiceSpec]:
    found: dict[str, ServiceSpec] = {}
    for module in package_modules(__package__, skip=frozenset({"registry", "spec"})):
        for spec in vars(module).values():
            if not isinstance(spec, ServiceSpec):
                continue
            if spec.type in found and found[spec.type] is not spec:
                raise RuntimeError(f"service type {spec.type!r} declared twice "
                                   f"({module.__name__})")
            found[spec.type] = spec
    return dict(sorted(found.items()))


SERVICES: dict[str, ServiceSpec] = _discover()
SERVICE_TYPES: tuple[str, ...] = tuple(SERVICES)
UDP_SERVICES: tuple[str, ...] = tuple(t for t, s in SERVICES.items() if s.proto == "udp")
SERVICE_WEIGHT: dict[str, int] = {t: s.weight for t, s in SERVICES.items()}
