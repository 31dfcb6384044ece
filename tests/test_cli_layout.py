"""The shape of the command line: lazy commands, what a command imports, escaped errors.

``dsgw --help`` must list every command without importing any command module, a read-only
verb (a listing, a show) must not open the chain library or the whole runtime, and an error
message is plain text: Rich markup in it (``[x]``, ``[/x]``) is shown as written and never
breaks the printer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gateway.cli.commands import COMMANDS
from gateway.cli.exits import ExitCode, HandledGroup, run_cli
from gateway.cli.lazy import Lazy, LazyGroup
from gateway.errors import NotFoundError


def _lazy_tables() -> list[tuple[str, str, Lazy]]:
    """Every lazy entry: the root's table and those of the groups that have one."""
    entries = [("", name, lazy) for name, lazy in COMMANDS.items()]
    for name, lazy in COMMANDS.items():
        command = lazy.load()
        if isinstance(command, LazyGroup):
            entries += [(name, sub, entry) for sub, entry in command.lazy.items()]
    return entries


@pytest.mark.parametrize(("group", "name", "lazy"), _lazy_tables())
def test_each_lazy_entry_loads_the_command_it_lists(group: str, name: str, lazy: Lazy) -> None:
    command = lazy.load()
    assert command.name == name, f"{lazy.target} is named {command.name}, listed as {name}"
    for limit in (30, 45, 60, 200):
        assert lazy.short_help(limit) == command.get_short_help_str(limit), (
            f"the help listed for `dsgw {group} {name}` differs from its docstring"
        )


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSGW_KEYSTORE_PASSPHRASE": "layout-test-passphrase"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


_LOADED = """
import json, sys
from gateway.cli.main import cli
try:
    cli.main(sys.argv[1:], prog_name="dsgw", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_loaded(*args: str) -> set[str]:
    done = _python(_LOADED, *args)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_lists_every_command_and_imports_none() -> None:
    done = _python(_LOADED, "--help")
    for name in COMMANDS:
        assert f"  {name} " in done.stdout
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    shell = {"gateway.cli", "gateway.cli.main", "gateway.cli.commands", "gateway.cli.lazy"}
    assert {m for m in loaded if m.startswith("gateway.cli.")} <= shell | {"gateway.cli.exits"}
    assert not loaded & {"web3", "sqlalchemy", "gateway.runtime", "gateway.settings"}


def test_a_listing_opens_the_store_alone(tmp_path: Path) -> None:
    init = _python("from gateway.cli.main import main; main()", "--data-dir", str(tmp_path), "init")
    assert init.returncode == 0, init.stderr
    loaded = _modules_loaded("--data-dir", str(tmp_path), "merchant", "list", "--json")
    assert "gateway.cli.parties" in loaded
    assert not loaded & {"web3", "eth_account", "gateway.runtime", "gateway.chain"}


# Every verb that only reads, run in one process one after another on a new store: each
# opens the keystore and the store (``with_store``), or the keystore alone, and builds the
# one reader it reads through, so none may import gateway.runtime (every service, the log
# writer). A lookup by id finds nothing on a new store (exit 3) after the same opening.
# Verbs that record something before they answer stay on the gateway: objection list
# (overdue objections), application list and show, tasks (deemed approvals).
READ_ONLY_VERBS: list[tuple[list[str], ExitCode]] = [
    (["merchant", "list", "--json"], ExitCode.OK),
    (["agreement", "list", "--json"], ExitCode.OK),
    (["dataset", "list", "--json"], ExitCode.OK),
    (["scenario", "list", "--json"], ExitCode.OK),
    (["calls", "--json"], ExitCode.OK),
    (["anchors", "--json"], ExitCode.OK),
    (["status", "--json"], ExitCode.OK),
    (["alerts", "list"], ExitCode.OK),
    (["alerts", "list", "--json", "--status", "resolved"], ExitCode.OK),
    (["alerts", "show", "1"], ExitCode.NOT_FOUND),
    (["product", "list", "--json"], ExitCode.OK),
    (["revenue", "--period", "2026-01"], ExitCode.NOT_FOUND),
    (["objection", "show", "obj-none"], ExitCode.NOT_FOUND),
    (["rating", "list", "--json"], ExitCode.OK),
    (["rating", "forms", "--json"], ExitCode.OK),
    (["onboarding", "list", "--json"], ExitCode.OK),
    (["measure", "list", "--all", "--json"], ExitCode.OK),
    (["measure", "show", "m-none"], ExitCode.NOT_FOUND),
    (["exclusions", "check", "91430100MA4L000000", "--json"], ExitCode.OK),
    (["workdays", "show", "--json"], ExitCode.OK),
    (["proof", "inclusion", "calls", "0", "--size", "1"], ExitCode.NOT_FOUND),
    (["proof", "consistency", "calls", "1", "1"], ExitCode.NOT_FOUND),
    (["keys", "list", "--json"], ExitCode.OK),
    (["keys", "verifiers", "--json"], ExitCode.OK),
    (["secrets", "list", "--json"], ExitCode.OK),
]

_ONE_AFTER_ANOTHER = """
import json, sys
from gateway.cli.exits import run_cli
from gateway.cli.main import cli
data_dir, verbs = sys.argv[1], json.loads(sys.argv[2])
seen = []
for verb in verbs:
    code = run_cli(cli, ["--data-dir", data_dir, *verb], "dsgw")
    seen.append([verb, int(code), "gateway.runtime" in sys.modules])
print(json.dumps(seen), file=sys.stderr)
"""


def test_read_only_verbs_do_not_import_the_runtime(tmp_path: Path) -> None:
    init = _python("from gateway.cli.main import main; main()", "--data-dir", str(tmp_path), "init")
    assert init.returncode == 0, init.stderr
    # Last, a verb that changes the store: it opens the gateway, so the check can see it.
    verbs = [verb for verb, _ in READ_ONLY_VERBS] + [["checkpoint"]]
    done = _python(_ONE_AFTER_ANOTHER, str(tmp_path), json.dumps(verbs))
    assert done.returncode == 0, done.stderr
    *seen, (_, checkpoint_code, checkpoint_opened_runtime) = json.loads(
        done.stderr.strip().splitlines()[-1]
    )
    assert [(verb, code) for verb, code, _ in seen] == [
        (verb, int(code)) for verb, code in READ_ONLY_VERBS
    ], done.stderr
    # Modules stay imported: the first verb seen with the runtime is the one that loaded it.
    opened = [" ".join(verb) for verb, _, runtime in seen if runtime]
    assert not opened, f"`dsgw {opened[0]}` imported gateway.runtime"
    assert (checkpoint_code, checkpoint_opened_runtime) == (ExitCode.OK, True)


def _failing_group(error: BaseException) -> click.Group:
    @click.group(cls=HandledGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        """A group whose one verb fails."""

    @group.command()
    @click.option("--json", "as_json", is_flag=True)
    def fail(as_json: bool) -> None:
        raise error

    return group


MARKUP = "record [x] of file [/x] [bold]name[/]"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFoundError(MARKUP), ExitCode.NOT_FOUND),
        (click.BadParameter(MARKUP), ExitCode.INVALID),
        (RuntimeError(MARKUP), ExitCode.INTERNAL),
        (SystemExit(MARKUP), ExitCode.FAILED),
    ],
)
def test_error_printers_show_markup_as_written(
    error: BaseException, code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(_failing_group(error), ["fail"], "dsgw") == code
    err = capsys.readouterr().err
    assert MARKUP in " ".join(err.split()), err


def test_error_printers_with_debug_and_json_keep_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = _failing_group(NotFoundError(MARKUP))
    assert run_cli(group, ["--debug", "fail"], "dsgw") == ExitCode.NOT_FOUND
    assert MARKUP in " ".join(capsys.readouterr().err.split())
    assert run_cli(group, ["fail", "--json"], "dsgw") == ExitCode.NOT_FOUND
    assert json.loads(capsys.readouterr().out)["error"]["detail"] == MARKUP


def test_a_store_that_is_down_is_said_as_such_not_as_a_bug(tmp_path: Path) -> None:
    """A PostgreSQL store refusing connections is the operator's to fix: a clear message and
    exit 1, on the Core read path (``merchant list``) and the engine's (``alerts list``)."""
    init = _python("from gateway.cli.main import main; main()", "--data-dir", str(tmp_path), "init")
    assert init.returncode == 0, init.stderr
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import os, sys; os.environ['DSGW_DATABASE_URL'] = sys.argv.pop(1); "
        "from gateway.cli.main import main; main()"
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/nowhere"
    for verb in (["merchant", "list"], ["alerts", "list"]):
        done = _python(code, url, "--data-dir", str(tmp_path), *verb)
        assert done.returncode == ExitCode.FAILED, (verb, done.stderr)
        assert "store is unavailable" in done.stderr, done.stderr
        assert "internal error" not in done.stderr
