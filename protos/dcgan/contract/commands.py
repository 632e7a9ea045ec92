"""What every dcgan-* command promises its user: exit codes, one line per error, --version.

Exit codes, the same for every command (the README's table):
  0  done
  1  bad data or environment: a file that cannot be read, a server that does not answer, a
     disk that is full, a checkpoint that fails its checksum
  2  a bad option or argument (click's own usage errors exit 2 as well)
  3  dcgan-export: a parity check failed, nothing was installed
  128 + N  stopped by signal N (dcgan-train saves a checkpoint first)

An error is one line on stderr, `error: <what and where>`. `entry_point` is the console
scripts' last line of defence: an exception that no command turned into such a line still
becomes one (with DCGAN_DEBUG=1, the traceback instead), so no user ever reads a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import typer

DONE = 0
FAILED = 1
USAGE = 2
PARITY_FAILED = 3
DEBUG_SETTING = "DCGAN_DEBUG"


def fail(message: str, code: int = FAILED) -> typer.Exit:
    """Print `error: message` on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def usage_error(message: str) -> typer.Exit:
    """A bad option or argument: exit code 2, as click's own usage errors."""
    return fail(message, USAGE)


def version_option(distribution: str) -> Any:
    """A `--version` option that prints `<distribution> <version>` and exits 0.

    Read from the command line only: a DCGAN_VERSION variable must not trigger it.
    """

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{distribution} {metadata.version(distribution)}")
            raise typer.Exit(DONE)

    return typer.Option(
        "--version",
        callback=show,
        is_eager=True,
        expose_value=False,
        allow_from_autoenv=False,
        help="Show the version and exit.",
    )


def entry_point(app: typer.Typer) -> Callable[[], None]:
    """The console script of `app`: an unexpected exception becomes one line and exit 1."""

    def main() -> None:
        try:
            app()
        except Exception as error:
            if os.environ.get(DEBUG_SETTING):
                raise
            lines = str(error).strip().splitlines()
            detail = f": {lines[0][:300]}" if lines else ""
            typer.echo(
                f"error: unexpected {type(error).__name__}{detail} "
                f"(set {DEBUG_SETTING}=1 for the traceback)",
                err=True,
            )
            sys.exit(FAILED)

    return main
