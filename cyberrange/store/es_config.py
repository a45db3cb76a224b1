"""Elasticsearch addressing, credentials and client: what ``es://HOST:PORT`` (or a config file)
means, where the secrets come from (the environment only, never printed) and how a failed
connection is explained in one line. ``es_store`` re-exports these names.
"""
from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import UserError

__all__ = ["EsConfig", "make_client", "explain", "ENV_API_KEY", "ENV_USER", "ENV_PASSWORD",
           "ENV_CA", "ENV_URL"]

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
PAGE = 5000                          # documents per search page

OPTIONS = ("ca", "prefix", "workers", "chunk", "chunk_mb", "spool", "auth", "timeout",
           "page", "retries")

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
