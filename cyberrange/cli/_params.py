"""Numeric option types that refuse what would hang or corrupt a run: NaN, infinity, negative
durations, a zero traffic intensity. click's own ``FloatRange`` lets NaN through (every
comparison with NaN is false), so these check ``math.isfinite`` first."""
from __future__ import annotations

import math
import os

import click


class Number(click.ParamType):
    """A finite number in ``[low, high]`` (``low`` excluded when ``above``)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 above: bool = False, integer: bool = False, unit: str = ""):
        self.low, self.high, self.above, self.integer, self.unit = low, high, above, integer, unit
        self.name = "integer" if integer else (unit or "number")

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(value, 10) if self.integer else float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not {'an integer' if self.integer else 'a number'}",
                          param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number <= self.low if self.above else number < self.low):
            self.fail(f"{value} must be {'>' if self.above else '>='} {self.low:g}"
                      f"{' ' + self.unit if self.unit else ''}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{value} must be <= {self.high:g}{' ' + self.unit if self.unit else ''}",
                      param, ctx)
        return int(number) if self.integer else float(number)

    def __repr__(self) -> str:
        return f"Number({self.low}, {self.high})"


DAY = 86_400.0
SECONDS = Number(0, DAY, unit="seconds")                  # a wait that may be zero
POSITIVE_SECONDS = Number(0, DAY, above=True, unit="seconds")
INTENSITY = Number(0, 1000, above=True)                  # a traffic-rate multiplier
SEED = Number(0, 2**63 - 1, integer=True)


def allow_outside_option(f):
    """``--allow-outside DIR`` (repeatable): files named inside the inputs (includes, a replay's
    pcap) may also lie below DIR, not only in the folder tree of the file given on the command
    line (docs/topology-format.md, "Includes and file references")."""
    def remember(ctx, param, value):
        from cyberrange.model.inputpaths import allow_outside
        allow_outside(value)
        return value
    return click.option("--allow-outside", "allow_outside", multiple=True, metavar="DIR",
                        type=click.Path(file_okay=False), expose_value=False, is_eager=True,
                        callback=remember,
                        help="also accept included / referenced files below DIR (repeatable; "
                             "or CYBERRANGE_INPUT_PATHS=DIR:DIR)")(f)


LINK_MODES = ("emulate", "shape", "relay", "netem")     # cyberrange.twin.build.LINK_MODES
LINK_EMULATION_HELP = ("How links emulate their profile's delay, jitter and loss: emulate "
                       "(default: netem where the kernel has it, else a userspace relay), relay, "
                       "netem, or shape (bandwidth only). Default: $CYBERRANGE_LINK_EMULATION, "
                       "else emulate. See docs/links.md.")


def link_emulation_option(f):
    """``--link-emulation MODE`` for every verb that builds a twin: it sets
    ``CYBERRANGE_LINK_EMULATION`` for this process and its children (``up --detach``,
    ``validate``'s workers), which ``twin.build.Twin`` reads."""
    def remember(ctx, param, value):
        if value is not None:
            os.environ["CYBERRANGE_LINK_EMULATION"] = value
        return value
    return click.option("--link-emulation", type=click.Choice(LINK_MODES), default=None,
                        expose_value=False, callback=remember, help=LINK_EMULATION_HELP)(f)


class ContentRef(click.ParamType):
    """A content file given by path or by name: ``fob``, ``recon_bruteforce``, found in
    ``--content-path``, ``$CYBERRANGE_PATH`` and the built-in content (``cyberrange.content``).
    A path that does not exist is passed on unchanged, for the loader's own error."""

    def __init__(self, kind: str):
        self.kind = kind
        self.name = kind

    def convert(self, value, param, ctx):
        from cyberrange import content
        path = content.resolve(self.kind, value)
        if os.path.isdir(path):
            self.fail(f"{self.kind} '{value}' is a directory.", param, ctx)
        return path

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from cyberrange import content
        return [*(CompletionItem(n) for n in content.names(self.kind) if n.startswith(incomplete)),
                CompletionItem(incomplete, type="file")]


TOPOLOGY = ContentRef("topology")
PLAYBOOK = ContentRef("playbook")
RESPONSE = ContentRef("response")
CHANGE = ContentRef("change")


def _detectors_dir(ctx, param, value):
    from cyberrange import content
    return content.detectors_dir(value)


#: ``--detectors DIR`` with no default in the current folder: the built-in detectors, or the
#: first content root (``--content-path``, ``$CYBERRANGE_PATH``) with a ``detectors/`` folder
DETECTORS = {"default": None, "callback": _detectors_dir, "metavar": "DIR",
             "show_default": "built-in, or the first content root's detectors/"}


def deprecated(old: str, new: str) -> None:
    """The one-line notice for a spelling that still works for this release (stderr)."""
    click.echo(f"note: `{old}` is deprecated and will be removed: use `{new}`", err=True)


def deprecated_alias(cmd: click.Command, old: str, new: str) -> click.Command:
    """A copy of ``cmd`` under its old name: same options, a deprecation line first, hidden
    from the help (docs/cli.md lists old -> new)."""
    import copy
    import functools
    alias = copy.copy(cmd)
    original = cmd.callback

    @functools.wraps(original)
    def callback(*args, **kwargs):
        deprecated(f"cyberrange {old}", f"cyberrange {new}")
        return original(*args, **kwargs)
    alias.callback = callback
    alias.hidden = True
    alias.help = f"Deprecated: use `cyberrange {new}`.\n\n{cmd.help or ''}"
    alias.short_help = f"deprecated: use `cyberrange {new}`"
    return alias


STORE_HELP = ("Where records go: duckdb:PATH, es://HOST:PORT, ess://HOST:PORT (TLS) or an "
              "Elasticsearch config file (docs/cli.md, docs/elasticsearch.md).")


def store_spec(value: str | None, *, bare: str = "duckdb") -> str | None:
    """A ``--store`` value as ``cyberrange.store.open_store`` takes it: ``duckdb:PATH`` becomes
    ``duckdb://PATH``; URLs and config files pass. A bare path is the old spelling of ``bare``
    (``duckdb:PATH``): it still works, with a deprecation line."""
    if value is None:
        return None
    v = str(value)
    if v.startswith("duckdb:") and not v.startswith("duckdb://"):
        return "duckdb://" + v[len("duckdb:"):]
    if "://" in v or v.endswith((".yaml", ".yml")):
        return v
    if bare == "duckdb":
        deprecated(f"--store {v}", f"--store duckdb:{v}")
    return v


def es_store_option(f):
    """``--store URL`` (default ``$CYBERRANGE_ES_URL``) for the commands that talk to
    Elasticsearch, and the old ``--to URL`` (hidden, with a deprecation line)."""
    def old_to(ctx, param, value):
        if value is not None:
            deprecated(f"--to {value}", f"--store {value}")
            ctx.meta["cyberrange.store_to"] = value

    def store(ctx, param, value):
        from click.core import ParameterSource
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            return ctx.meta.get("cyberrange.store_to", value)
        return value
    f = click.option("--to", "old_target", hidden=True, expose_value=False, is_eager=True,
                     callback=old_to, default=None, metavar="URL")(f)
    return click.option("--store", "target", envvar="CYBERRANGE_ES_URL", default=None,
                        metavar="URL", callback=store,
                        help="The cluster: es://HOST:PORT, ess://HOST:PORT (TLS) or an ES "
                             "config file (default: $CYBERRANGE_ES_URL). Credentials: "
                             "CYBERRANGE_ES_API_KEY, or CYBERRANGE_ES_USER and "
                             "CYBERRANGE_ES_PASSWORD. (--to: the old name.)")(f)


def json_option(help: str = "Print the result as JSON on stdout (errors too: "
                            "{\"error\", \"file\", \"line\"})."):
    """``--json``: the one spelling of "machine-readable on stdout" (a flag, never a file)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def echo_json(data) -> None:
    """One JSON document on stdout."""
    import json
    click.echo(json.dumps(data, indent=2, default=str))
