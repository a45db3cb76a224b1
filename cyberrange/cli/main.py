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


def main(argv=None):
    _register()
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
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except (UserError, EnvironmentProblem) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except CheckFailed as e:
        click.echo(f"failed: {e}", err=True)
        sys.exit(1)
    except OSError as e:            # a full disk, a read-only folder: one line, not a traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(2)
    sys.exit(0)


if __name__ == "__main__":
    main()
