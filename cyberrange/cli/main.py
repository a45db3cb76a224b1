"""The ``cyberrange`` command. Each verb group lives in its own module; this one wires them up
and turns user errors into one line and an exit code (2 bad input, 1 failed check)."""
from __future__ import annotations

import sys

import click

from cyberrange import __version__
from cyberrange.errors import CheckFailed, EnvironmentProblem, UserError


def _content_path(ctx, param, value):
    from cyberrange import content
    content.set_option_roots(value)
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="cyberrange")
@click.option("--content-path", "content_path", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True), callback=_content_path,
              expose_value=False, is_eager=True,
              help="A folder with your own topologies/, attack_playbooks/, detectors/, labs/, "
                   "responses/ (repeatable): its files are found by name before the built-in "
                   "ones. Also: CYBERRANGE_PATH=DIR:DIR. See docs/cli.md.")
def cli():
    """cyberrange: a network digital twin for red/blue drills, labs and patch validation.

    Topologies, playbooks, response files and labs are given by path or by name
    (`cyberrange drill run fob recon_bruteforce`)."""


def _register():
    from cyberrange.cli import (
        attack,
        blue,
        detect,
        drill,
        ingest,
        lab,
        store,
        topo,
        twin,
        validate,
    )
    for mod in (topo, attack, twin, drill, detect, ingest, store, blue, validate, lab):
        for cmd in getattr(mod, "COMMANDS", []):
            cli.add_command(cmd)
    cli.add_command(__import__("cyberrange.cli.query", fromlist=["query"]).query)


def json_requested(argv=None) -> bool:
    """``--json`` among the command's own arguments (not after ``--``): errors are then also
    printed as one JSON object on stdout. Read from the arguments, not from click, because a
    usage error stops click before any option is processed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" in args:
        args = args[:args.index("--")]
    return "--json" in args


def _fail(code: int, message: str, *, as_json: bool, failed: bool = False, file=None,
          line=None, col=None):
    """One line on stderr and the exit code; with --json also ``{"error", "file", "line"}`` on
    stdout (a failed check, exit 1, prints its JSON result itself: stderr only)."""
    where = f"{file}:{line}:{col or 1}: " if file and line else (f"{file}: " if file else "")
    click.echo(f"{'failed' if failed else 'error'}: {where}{message}", err=True)
    if as_json and not failed:
        import json
        click.echo(json.dumps({"error": message, "file": file, "line": line, "col": col,
                               "exit_code": code}))
    sys.exit(code)


def main(argv=None):
    _register()
    as_json = json_requested(argv)
    try:
        cli.main(args=argv, prog_name="cyberrange", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        from cyberrange.twin import shield
        signum = shield.last_signal or 2
        click.echo(f"stopped by {'Ctrl-C' if signum == 2 else f'signal {signum}'}", err=True)
        sys.exit(128 + signum)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":    # a group called bare: its help
            click.echo(e.format_message(), err=True)
            sys.exit(2)
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        _fail(2, f"{e.format_message()}{hint}", as_json=as_json)
    except click.ClickException as e:
        _fail(2, e.format_message(), as_json=as_json)
    except UserError as e:
        _fail(2, e.message, as_json=as_json, file=e.file, line=e.line, col=e.col)
    except EnvironmentProblem as e:
        _fail(2, str(e), as_json=as_json)
    except CheckFailed as e:
        _fail(1, str(e), as_json=as_json, failed=True)
    except OSError as e:            # a full disk, a read-only folder: one line, not a traceback
        _fail(2, str(e.strerror or e), as_json=as_json,
              file=getattr(e, "filename", None) or None)
    sys.exit(0)


if __name__ == "__main__":
    main()
