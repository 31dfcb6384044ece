"""The ``anvil`` chain backend: a local Ethereum node this process starts, or attaches to.

The node (foundry's anvil from ``contracts/node_modules``) listens on a free loopback port
and persists its state to a file in a given directory (``anvil --state``: loaded at start,
dumped on a clean stop and every few seconds while it runs). One node serves one directory:
it holds an exclusive lock on ``anvil.lock`` there for as long as it runs, and any other
process that finds the lock taken attaches to that node instead of starting another.
Process management (lock files, start, stop) is most of the code, hence its own module.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from eth_typing import ChecksumAddress
from web3 import AsyncHTTPProvider

from gateway.chain.backend import ChainBackend, http_provider, web3_for
from gateway.chain.errors import ChainConfigError, ChainError, rpc_errors

__all__ = ["ANVIL_EXECUTABLE", "AnvilBackend"]

log = logging.getLogger(__name__)

ANVIL_EXECUTABLE: Final = (
    Path(__file__).resolve().parents[2] / "contracts" / "node_modules" / ".bin" / "anvil"
)

_ANVIL_HINT: Final = "run `npm ci --prefix contracts` (installs the pinned anvil)"

_LISTENING: Final = re.compile(rb"Listening on (127\.0\.0\.1|\[?::1\]?|[\w.-]+):(\d+)")


class AnvilBackend(ChainBackend):
    """An anvil node run by this process, with persistent state in ``state_dir``.

    The state file (``anvil-state.json``) is loaded when the node starts, written every
    ``state_interval`` seconds while it runs and on every clean stop; the node's output goes
    to ``anvil.log`` beside it. :meth:`stop` and :meth:`start` may alternate (the node comes
    back on the same port when it can, with the same state); :meth:`close` stops for good.

    ``no_mining`` leaves mining to :meth:`mine` (tests); ``block_time`` mines at intervals;
    neither means a block per transaction. ``slots_in_an_epoch`` sets how far anvil's
    ``finalized`` tag trails the head (two epochs).

    One node per directory, whoever starts it: the node inherits an open file description
    holding an exclusive ``flock`` on ``anvil.lock`` (the starting process closes its own
    copy once the node runs), so the lock is held exactly as long as the node lives, even
    if the process that started it is killed. :meth:`start` takes the lock and starts the
    node, or, when the lock is taken, attaches to the running node at the URL its starter
    published in ``anvil.pid``. An attached backend never stops the node nor touches that
    file; :attr:`running` says whether the node still holds its lock, so a gateway that was
    attached starts the node itself once the other process stops it.
    """

    kind = "anvil"
    ephemeral = False

    def __init__(
        self,
        state_dir: Path,
        *,
        executable: Path | None = None,
        port: int = 0,
        no_mining: bool = False,
        block_time: float | None = None,
        slots_in_an_epoch: int | None = None,
        hardfork: str | None = None,
        state_interval: int = 5,
        startup_timeout: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._state_dir = state_dir
        self._executable = executable
        self._port = port
        self._no_mining = no_mining
        self._block_time = block_time
        self._slots = slots_in_an_epoch
        self._hardfork = hardfork
        self._state_interval = state_interval
        self._startup_timeout = startup_timeout
        self._request_timeout = request_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._attached = False

    @property
    def state_file(self) -> Path:
        return self._state_dir / "anvil-state.json"

    @property
    def log_file(self) -> Path:
        return self._state_dir / "anvil.log"

    @property
    def _pid_file(self) -> Path:
        return self._state_dir / "anvil.pid"

    @property
    def lock_file(self) -> Path:
        """Locked (``flock``) by the node serving this directory, for as long as it runs."""
        return self._state_dir / "anvil.lock"

    @property
    def attached(self) -> bool:
        """Whether this backend uses a node another process started (and will not stop it)."""
        return self._attached

    @property
    def url(self) -> str | None:
        """The node's URL once started (kept across :meth:`stop`)."""
        return self._url

    @property
    def running(self) -> bool:
        """Whether the node this backend uses is alive: its own process, or, attached, the
        node that holds the directory's lock."""
        if self._attached:
            return self._locked_by_node()
        return self._process is not None and self._process.poll() is None

    @property
    def node(self) -> str:
        how = " (attached: run by another process)" if self._attached else ""
        return f"anvil at {self._url or '(not started)'}{how} (state in {self.state_file})"

    def _try_lock(self) -> int | None:
        """An open descriptor holding the directory's lock, or None if a node holds it."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _locked_by_node(self) -> bool:
        if not self.lock_file.exists():
            return False
        try:
            fd = self._try_lock()
        except OSError:
            return False
        if fd is None:
            return True
        os.close(fd)
        return False

    def _published_url(self) -> str | None:
        try:
            lines = self._pid_file.read_text().splitlines()
        except OSError:
            return None
        return lines[2] if len(lines) >= 3 and lines[2].startswith("http://") else None

    def _resolve_executable(self) -> Path:
        if self._executable is not None:
            candidate = self._executable
        elif ANVIL_EXECUTABLE.exists():
            candidate = ANVIL_EXECUTABLE
        else:
            found = shutil.which("anvil")
            candidate = Path(found) if found else ANVIL_EXECUTABLE
        if not candidate.exists():
            raise ChainConfigError(f"chain: anvil is not installed at {candidate}; {_ANVIL_HINT}")
        return candidate

    def _arguments(self, executable: Path, port: int) -> list[str]:
        args = [
            str(executable),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state",
            str(self.state_file),
            "--state-interval",
            str(self._state_interval),
        ]
        if self._no_mining:
            args.append("--no-mining")
        if self._block_time is not None:
            args += ["--block-time", str(self._block_time)]
        if self._slots is not None:
            args += ["--slots-in-an-epoch", str(self._slots)]
        if self._hardfork is not None:
            args += ["--hardfork", self._hardfork]
        return args

    async def start(self) -> None:
        """Start the node (loading the state file if there is one) and wait until it listens;
        or, when another process's node serves this directory, attach to it.

        Raises :class:`ChainConfigError` if anvil is missing or does not come up, or if the
        directory's node does not publish its URL within the startup timeout.
        """
        if self.running:
            return
        executable = self._resolve_executable()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        while True:
            lock = self._try_lock()
            if lock is not None:
                try:
                    await self._start_own(executable, lock)
                finally:
                    os.close(lock)  # the node holds its own copy now
                break
            url = self._published_url()
            if url is not None:
                self._attach(url)
                break
            if loop.time() > deadline:
                raise ChainConfigError(
                    f"chain: another process holds {self.lock_file} (an anvil node serves "
                    f"this directory) but published no URL in {self._pid_file} within "
                    f"{self._startup_timeout:.0f} s"
                )
            await asyncio.sleep(0.05)  # its starter is still waiting for it to listen
        assert self._url is not None
        if self._w3 is None:
            self._w3 = web3_for(http_provider(self._url, self._request_timeout))
        else:
            provider = self._w3.provider
            assert isinstance(provider, AsyncHTTPProvider)
            await provider.disconnect()
            provider.endpoint_uri = self._url  # type: ignore[assignment]
        log.info("chain: using %s", self.node)

    def _attach(self, url: str) -> None:
        self._attached = True
        self._process = None
        self._url = url
        match = re.search(r":(\d+)$", url)
        if match is not None:
            self._port = int(match.group(1))  # reused if this process starts the node later

    async def _start_own(self, executable: Path, lock: int) -> None:
        self._attached = False
        # The port of an earlier run, so that a URL handed out before stays valid; a free
        # port if that one is taken meanwhile.
        ports = [self._port] if self._port == 0 else [self._port, 0]
        failure = ""
        for port in ports:
            failure = await self._launch(executable, port, lock)
            if not failure:
                return
            if port:
                log.warning(
                    "chain: anvil could not use port %d (%s); trying another", port, failure
                )
        raise ChainConfigError(f"chain: anvil did not start ({failure}); see {self.log_file}")

    async def _launch(self, executable: Path, port: int, lock: int) -> str:
        """Start one anvil process, handing it the directory's lock ``lock``; '' once it
        listens, else why it did not."""
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - fixed executable, no shell
                self._arguments(executable, port),
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(lock,),
            )
        self._publish(f"{process.pid}\n{self.state_file}\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        while True:
            output = self.log_file.read_bytes()[offset:]
            match = _LISTENING.search(output)
            if match is not None:
                self._process = process
                self._port = int(match.group(2))
                self._url = f"http://127.0.0.1:{self._port}"
                # Other dsgw processes (audit, status) reach this node through the pid file.
                self._publish(f"{process.pid}\n{self.state_file}\n{self._url}\n")
                return ""
            if process.poll() is not None:
                self._forget_pid_file(process.pid)
                tail = output.decode(errors="replace").strip().splitlines()[-3:]
                return f"exit status {process.returncode}: {' / '.join(tail)}"
            if loop.time() > deadline:
                await self._terminate(process)
                return f"no 'Listening on' line within {self._startup_timeout:.0f} s"
            await asyncio.sleep(0.02)

    def running_url(self) -> str | None:
        """The URL of the node serving this state directory, if one runs (whoever started
        it): a reader attaches to it instead of starting a second node on the same state."""
        return self._published_url() if self._locked_by_node() else None

    async def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        # SIGTERM makes anvil dump its state and exit; it is quick, but never wait forever.
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            log.error("chain: anvil (pid %d) ignored SIGTERM; killing it", process.pid)
            process.kill()
            await asyncio.to_thread(process.wait)

    async def stop(self) -> None:
        """Stop the node cleanly (its state is dumped to :attr:`state_file`); :meth:`start`
        brings it back."""
        process, self._process = self._process, None
        if self._attached:
            self._attached = False  # another process's node: not ours to stop
            return
        if process is not None:
            await self._terminate(process)
            self._forget_pid_file(process.pid)
            log.info("chain: stopped anvil; state kept in %s", self.state_file)

    def _publish(self, text: str) -> None:
        """Write ``anvil.pid`` whole (rename), so an attaching reader never sees half a URL."""
        temporary = self._pid_file.with_suffix(".pid.tmp")
        temporary.write_text(text)
        temporary.replace(self._pid_file)

    def _forget_pid_file(self, pid: int) -> None:
        """Remove ``anvil.pid`` if it still names ``pid``: once the node exited, another
        process may already have started the next one and published it there."""
        try:
            if self._pid_file.read_text().split("\n", 1)[0] == str(pid):
                self._pid_file.unlink(missing_ok=True)
        except OSError:
            return

    async def close(self) -> None:
        await self.stop()
        await super().close()

    async def dev_account(self) -> ChecksumAddress | None:
        with rpc_errors("listing anvil's dev accounts", self.node):
            accounts = await self.w3.eth.accounts
        return accounts[0]

    async def mine(self, blocks: int = 1) -> None:
        with rpc_errors("mining", self.node):
            response = await self.w3.provider.make_request("anvil_mine", [hex(blocks)])
        if "error" in response:
            raise ChainError(f"chain: anvil_mine failed: {response['error']}")
