"""The CLI's one error printer and its exit codes.

Every ``dsgw`` verb runs under :func:`run_cli`: whatever goes wrong ends as one message and
one exit code from :class:`ExitCode`, never a Python traceback. Messages go out as plain
text (Rich markup in them, such as ``[x]`` in a file name or a trade id, is escaped), and
as a JSON object on standard output when the command line asked for ``--json``, so a
script reading JSON gets JSON on every outcome. A dependency that is down (the store refusing
connections, a full disk) is said as such, with :attr:`ExitCode.FAILED`. An error the code
did not foresee is a bug:
one line "internal error: ..., please report" and :attr:`ExitCode.INTERNAL`; its
traceback is printed with ``--debug`` and logged at debug level.

This module imports no domain code: it maps the :mod:`gateway.errors` hierarchy and click's
own exceptions, and asks :mod:`gateway.dependencies` whether an unforeseen error is an outage.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from gateway.errors import ConflictError, DsgwError, ForbiddenError, NotFoundError
from gateway.errors import ValidationError as DsgwValidationError

__all__ = ["ExitCode", "HandledGroup", "exit_code", "print_error", "run_cli"]

_log = logging.getLogger("dsgw.cli")


class ExitCode(IntEnum):
    """What a ``dsgw`` exit status means; documented in README "Exit codes"."""

    OK = 0
    FAILED = 1
    """A refusal or failure of another kind (configuration, keystore, store, chain, source)."""
    INVALID = 2
    """Invalid input: a bad option or argument, an unreadable or malformed file."""
    NOT_FOUND = 3
    CONFLICT = 4
    """Conflicting with what is recorded, or not allowed (already done, forbidden)."""
    AUDIT_FINDINGS = 5
    """``dsgw audit`` found tampering."""
    NOT_VERIFIED = 6
    """``dsgw verify``: the bundle does not verify."""
    DISCREPANCIES = 7
    """``dsgw reconcile``: the exchange ledger, the products stream and usage differ."""
    NOBODY_NAMED = 8
    """``dsgw trace``: no recipient is singled out."""
    INTERNAL = 70
    """A bug (EX_SOFTWARE of sysexits.h): please report it with the ``--debug`` output."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C), as shells report SIGINT."""


def exit_code(error: DsgwError) -> ExitCode:
    """One mapping from errors to exit codes, so scripts can tell failures apart."""
    if isinstance(error, DsgwValidationError):
        return ExitCode.INVALID
    if isinstance(error, NotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(error, ConflictError | ForbiddenError):
        return ExitCode.CONFLICT
    return ExitCode.FAILED


def print_error(
    message: str, code: ExitCode, *, as_json: bool, kind: str, console: Console | None = None
) -> None:
    """``message`` once: ``error: ...`` on stderr (markup escaped), or with ``as_json`` a
    JSON object ``{"error": {...}}`` on stdout."""
    if as_json:
        document = {"error": {"type": kind, "detail": message, "exit_code": int(code)}}
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    # Never wrapped by Rich: a path or a command in the message stays whole on its line, to
    # be copied from a terminal (which wraps it for the eye only) or read from a log file.
    (console or Console(stderr=True)).print(
        f"[bold red]error:[/] {escape(message)}", soft_wrap=True
    )


def _wants(flag: str, args: Sequence[str]) -> bool:
    """Whether ``flag`` is on the command line (before a ``--``): the handler runs after
    click's contexts are gone, so it reads the arguments themselves."""
    for arg in args:
        if arg == "--":
            return False
        if arg == flag:
            return True
    return False


class HandledGroup(click.Group):
    """A click group whose standalone run (the console script, ``cli()``, click's test
    runner) goes through :func:`run_cli`, so no caller of the group can see a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        sys.exit(run_cli(self, argv, prog_name or self.name or "dsgw"))


def run_cli(command: click.Command, args: Sequence[str], prog_name: str) -> int:
    """Run ``command`` on ``args`` and turn every outcome into an exit status."""
    as_json = _wants("--json", args)
    debug = _wants("--debug", args)
    err = Console(stderr=True)
    try:
        result: Any = command.main(args=list(args), prog_name=prog_name, standalone_mode=False)
    except SystemExit as done:  # a verb's own verdict (audit 5, verify 6, reconcile 7, ...)
        return _status(done.code)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except (click.Abort, KeyboardInterrupt):
        err.print("interrupted")
        return ExitCode.INTERRUPTED
    except click.ClickException as error:
        if as_json:
            print_error(error.format_message(), ExitCode.INVALID, as_json=True, kind="usage")
        else:
            error.show()  # usage line and hint, as click prints them
        return ExitCode.INVALID if error.exit_code == 2 else int(error.exit_code)
    except DsgwError as error:
        code = exit_code(error)
        if type(error) is DsgwError:  # raised as itself it is a failure of ours
            return _internal(error, as_json=as_json, debug=debug, console=err)
        print_error(error.detail, code, as_json=as_json, kind=error.slug, console=err)
        if debug:
            err.print(escape(traceback.format_exc()), end="", highlight=False)
        return code
    except Exception as error:
        outage = _outage(error)
        if outage is None:
            return _internal(error, as_json=as_json, debug=debug, console=err)
        print_error(outage, ExitCode.FAILED, as_json=as_json, kind="unavailable", console=err)
        if debug:
            err.print(escape(traceback.format_exc()), end="", highlight=False)
        return ExitCode.FAILED
    return result if isinstance(result, int) else ExitCode.OK


def _outage(error: BaseException) -> str | None:
    """What to say when ``error`` means a dependency is down (the store refusing
    connections, a full disk): the operator's to fix, not a bug to report. The driver's own
    first line follows, since the local administrator needs it to act.

    Imported here: the classification loads the drivers' exception types, and a command
    that fails this way has already loaded them."""
    from gateway.dependencies import dependency_error, describe

    cause = dependency_error(error)
    if cause is None:
        return None
    return f"{cause.detail} ({describe(error)})"


def _status(code: object) -> int:
    if code is None:
        return ExitCode.OK
    if isinstance(code, int):
        return code
    Console(stderr=True).print(escape(str(code)), highlight=False)
    return ExitCode.FAILED


def _internal(error: BaseException, *, as_json: bool, debug: bool, console: Console) -> int:
    _log.debug("internal error", exc_info=error)
    summary = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    message = f"internal error: {summary}, please report (run again with --debug for details)"
    print_error(message, ExitCode.INTERNAL, as_json=as_json, kind="internal", console=console)
    if debug:
        console.print(escape("".join(traceback.format_exception(error))), end="", highlight=False)
    return ExitCode.INTERNAL
