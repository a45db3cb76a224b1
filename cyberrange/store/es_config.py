"""Elasticsearch addressing, credentials and client: what ``es://HOST:PORT`` (or a config file)
means, where the secrets come from (the environment only, never printed) and how a failed
connection is explained in one line. ``es_store`` re-exports these names.
"""
from __future__ import annotations

import logging
import os
import re
import ssl
import sys
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

# numeric options: (type, least, most); NaN and infinity are out of every range
NUMERIC = {"workers": (int, 1, 64), "chunk": (int, 1, 100_000), "chunk_mb": (float, 0.001, 100),
           "timeout": (float, 0.001, 3600), "page": (int, 1, 10_000), "retries": (int, 0, 100)}
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
        """A YAML config file (``elasticsearch: {url: ..., option: value}``), read by the one
        safe YAML loader; its ``ca`` and ``spool`` are relative to the file and must stay in its
        folder tree (``model/inputpaths.py``): a shared config file may not make cyberrange
        read or write elsewhere. Every error is one line."""
        from ..model import inputpaths
        from ..model.yamlsrc import load_yaml
        doc = load_yaml(path, "es-config")
        data = doc.data
        section = data.get("elasticsearch") if isinstance(data, dict) else None
        if not isinstance(section, dict) or "url" not in section:
            raise doc.error("expected a mapping 'elasticsearch:' with a 'url'",
                            ("elasticsearch",) if isinstance(data, dict) else ())
        for key in data:
            if key != "elasticsearch":
                raise doc.error(f"unknown key {key!r} (expected only 'elasticsearch')", (key,),
                                key=True)
        section = dict(section)
        for secret in ("api_key", "password", "user", "username"):
            if secret in section:
                raise doc.error(f"'{secret}' does not belong in a config file: set {ENV_API_KEY},"
                                f" or {ENV_USER} and {ENV_PASSWORD}", ("elasticsearch", secret),
                                key=True)
        for key, value in section.items():
            if key not in OPTIONS and key != "url":
                raise doc.error(f"unknown Elasticsearch option {key!r} (known: url, "
                                f"{', '.join(OPTIONS)})", ("elasticsearch", key), key=True)
            if value is None or isinstance(value, (dict, list)):
                raise doc.error(f"'{key}' must be a single value, not "
                                f"{'nothing' if value is None else type(value).__name__}",
                                ("elasticsearch", key))
        url = section.pop("url")
        if not isinstance(url, str) or "://" not in url:     # not another config file
            raise doc.error("'url' must be a URL such as es://HOST:PORT", ("elasticsearch", "url"))
        try:
            base = cls.parse(url)
        except UserError as exc:
            raise doc.error(exc.message, ("elasticsearch", "url")) from None
        if base.extra:
            section = {**base.extra, **section}
        opts = {k: str(v) for k, v in section.items()}
        tree = inputpaths.tree_of(path)
        for key in ("ca", "spool"):
            if key in opts:
                real = inputpaths.confine(opts[key], tree, tree)
                if real is None:
                    where = ("elasticsearch", key) if key in section else ("elasticsearch", "url")
                    raise doc.error(inputpaths.outside_message(key, opts[key], tree), where)
                opts[key] = real
        if base.ca and "ca" not in opts:
            opts["ca"] = base.ca

        def locate(key: str, message: str) -> UserError:
            at = ("elasticsearch", key) if key in section else ("elasticsearch", "url")
            return doc.error(message, at)
        return cls._build(base.url, opts, path, locate)

    @classmethod
    def _build(cls, url: str, opts: dict, where: str, locate=None) -> "EsConfig":
        """The config from a URL and its options; ``locate(option, message)``, when given,
        makes the error for a bad option (a config file points at its line)."""
        def bad(key: str, message: str) -> UserError:
            return locate(key, message) if locate else UserError(message)

        unknown = [k for k in opts if k not in OPTIONS]
        if unknown:
            raise bad(unknown[0], f"unknown Elasticsearch option {unknown[0]!r} in {where} "
                                  f"(known: {', '.join(OPTIONS)})")
        cfg = cls(url=url, extra=dict(opts))
        for key, (conv, low, high) in NUMERIC.items():
            if key not in opts:
                continue
            try:
                value = conv(str(opts[key]).strip())
            except ValueError:
                raise bad(key, f"Elasticsearch option {key}={opts[key]!r} is not a number"
                               + (" (a whole number)" if conv is int else "")) from None
            if not (low <= value <= high):             # NaN fails this too
                raise bad(key, f"Elasticsearch option {key}={opts[key]!r} is out of range "
                               f"({low:g} to {high:g})")
            setattr(cfg, key, value)
        cfg.prefix = opts.get("prefix", cfg.prefix)
        if not cfg.prefix or cfg.prefix != cfg.prefix.lower() or any(
                c in cfg.prefix for c in ' "*\\<|,>/?#:'):
            raise bad("prefix", f"Elasticsearch index prefix {cfg.prefix!r} is not a valid index "
                                "name (lowercase, no spaces or * \" \\ < | , > / ? # :)")
        cfg.spool = opts.get("spool")
        cfg.auth = opts.get("auth", "env")
        if cfg.auth not in ("env", "none"):
            raise bad("auth", f"Elasticsearch option auth={cfg.auth!r}: use auth=none for a "
                              "cluster without security, or leave it out (credentials from the "
                              "environment)")
        cfg.ca = opts.get("ca") or os.environ.get(ENV_CA) or None
        if cfg.ca and not Path(cfg.ca).is_file():
            raise bad("ca", f"CA file not found: {cfg.ca}")
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


_warned_cleartext: set[str] = set()


def warn_cleartext(cfg: EsConfig, credentials: dict) -> None:
    """Once per cluster and process, a line on stderr when credentials would go over plain
    HTTP (``es://``): anyone on the path can read an API key or a password there."""
    if credentials and not cfg.tls and cfg.url not in _warned_cleartext:
        _warned_cleartext.add(cfg.url)
        kind = "API key" if "api_key" in credentials else "user and password"
        print(f"warning: Elasticsearch at {cfg.url}: the credentials from the environment "
              f"({kind}) go over plain HTTP in clear text; use ess:// (TLS) for a cluster "
              f"reached over a network", file=sys.stderr, flush=True)


def make_client(cfg: EsConfig):
    from elasticsearch import Elasticsearch
    credentials = cfg.credentials()
    warn_cleartext(cfg, credentials)
    kwargs: dict = dict(credentials, request_timeout=cfg.timeout, max_retries=2,
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
