"""Chain backends: where the anchor registry lives and how the gateway reaches it.

``embedded``
    py-evm in this process through eth-tester. Ephemeral (gone with the process) and fast;
    for tests and for machines without a node. Mining is under the caller's control.
``anvil``
    a real Ethereum node (foundry's anvil from ``contracts/node_modules``) that this process
    starts on a free loopback port, with its state persisted to a file in a given directory
    (``anvil --state``: loaded at start, dumped on a clean stop and every few seconds while
    it runs), and stops again on :meth:`ChainBackend.close`. One node serves one directory:
    the node holds an exclusive lock on ``anvil.lock`` there for as long as it runs, and
    any other process (a second gateway, a new leader, ``dsgw audit --chain``) that finds
    the lock taken attaches to that node instead of starting another.
``rpc``
    any Ethereum JSON-RPC endpoint (Besu, geth, ...); nothing is started or deployed.

All three hand out an :class:`~web3.AsyncWeb3`, so anchoring never blocks the gateway's event
loop. Retrying is the anchoring worker's job: the HTTP providers here do not retry.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Self

import aiohttp
from eth_typing import ChecksumAddress
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import TimeExhausted, TransactionNotFound
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.types import TxParams, TxReceipt

from gateway.chain.errors import ChainConfigError, ChainError, revert_errors, rpc_errors

__all__ = [
    "ANVIL_EXECUTABLE",
    "BACKEND_KINDS",
    "AnvilBackend",
    "ChainBackend",
    "EmbeddedBackend",
    "RpcBackend",
    "open_backend",
]

log = logging.getLogger(__name__)

ANVIL_EXECUTABLE: Final = (
    Path(__file__).resolve().parents[2] / "contracts" / "node_modules" / ".bin" / "anvil"
)
_ANVIL_HINT: Final = "run `npm ci --prefix contracts` (installs the pinned anvil)"
_LISTENING: Final = re.compile(rb"Listening on (127\.0\.0\.1|\[?::1\]?|[\w.-]+):(\d+)")
BACKEND_KINDS: Final = ("embedded", "anvil", "rpc")


class ChainBackend(abc.ABC):
    """A chain to anchor on. Use as ``async with backend:`` or call :meth:`start` and
    :meth:`close`; :attr:`w3` is usable in between."""

    kind: ClassVar[str]
    ephemeral: ClassVar[bool]
    """Whether the chain's state vanishes with this process."""

    def __init__(self) -> None:
        self._w3: AsyncWeb3[Any] | None = None

    @property
    def w3(self) -> AsyncWeb3[Any]:
        """The web3 client. Raises :class:`ChainConfigError` before :meth:`start`."""
        if self._w3 is None:
            raise ChainConfigError(f"chain: the {self.kind} backend is not started")
        return self._w3

    @property
    @abc.abstractmethod
    def node(self) -> str:
        """Where the chain is, for messages: ``"anvil at http://127.0.0.1:8545"``."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Make :attr:`w3` usable (start the node where this backend runs one)."""

    async def close(self) -> None:
        """Release connections and stop what :meth:`start` started."""
        if self._w3 is not None and isinstance(self._w3.provider, AsyncHTTPProvider):
            await self._w3.provider.disconnect()

    async def dev_account(self) -> ChecksumAddress | None:
        """A funded account the node signs for (dev chains only), used to deploy the registry
        and fund the anchoring account; None on production chains."""
        return None

    async def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (dev chains only).

        Raises :class:`ChainConfigError` on chains that do not mine on demand."""
        raise ChainConfigError(f"chain: {self.node} does not mine on demand")

    async def send_unlocked(self, tx: TxParams, what: str) -> TxReceipt:
        """Send ``tx`` from an account the node signs for (a dev account) and wait until it
        is mined, mining the block on chains that mine on demand.

        Raises :class:`ChainError` if it reverts or is not mined within 30 s.
        """
        w3 = self.w3
        with rpc_errors(what, self.node):
            try:
                tx_hash = await w3.eth.send_transaction(tx)
            except revert_errors() as exc:
                raise ChainError(f"chain: {what}: reverted: {exc}") from exc
            try:
                receipt = await w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                await self.mine(1)
                try:
                    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
                except TimeExhausted as exc:
                    raise ChainError(
                        f"chain: {what}: transaction {tx_hash.to_0x_hex()} was not mined "
                        "within 30 s"
                    ) from exc
        if receipt["status"] != 1:
            raise ChainError(f"chain: {what}: reverted (tx {tx_hash.to_0x_hex()})")
        return receipt

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _http_provider(url: str, timeout: float) -> AsyncHTTPProvider:
    # exception_retry_configuration=None: the worker backs off itself; web3's own retries
    # would hold every call for seconds while the node is down.
    return AsyncHTTPProvider(
        url,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
        exception_retry_configuration=None,
    )


class EmbeddedBackend(ChainBackend):
    """py-evm in process (eth-tester). Ephemeral: every start is a fresh chain.

    With ``auto_mine=False`` transactions wait in a pending block until :meth:`mine`;
    :attr:`tester` gives tests snapshots and reverts (``take_snapshot``/``revert_to_snapshot``)
    to stage reorgs.
    """

    kind = "embedded"
    ephemeral = True

    def __init__(self, *, auto_mine: bool = True) -> None:
        super().__init__()
        self._auto_mine = auto_mine
        self._tester: Any = None  # eth_tester.EthereumTester (an untyped library)

    @property
    def node(self) -> str:
        return "the embedded py-evm chain (ephemeral: lost when the process exits)"

    @property
    def tester(self) -> Any:
        """The ``eth_tester.EthereumTester`` under the chain."""
        if self._tester is None:
            raise ChainConfigError("chain: the embedded backend is not started")
        return self._tester

    async def start(self) -> None:
        if self._w3 is not None:
            return
        # Imported here: py-evm takes seconds to load, and only this backend needs it.
        from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]

        tester = EthereumTester(PyEVMBackend())
        if not self._auto_mine:
            tester.disable_auto_mine_transactions()
        provider = AsyncEthereumTesterProvider()
        provider.ethereum_tester = tester
        self._tester = tester
        self._w3 = AsyncWeb3(provider)
        log.warning("chain: anchoring on %s", self.node)

    async def dev_account(self) -> ChecksumAddress | None:
        accounts = await self.w3.eth.accounts
        return accounts[0]

    async def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)


class RpcBackend(ChainBackend):
    """Any Ethereum JSON-RPC endpoint over HTTP(S)."""

    kind = "rpc"
    ephemeral = False

    def __init__(self, url: str, *, request_timeout: float = 10.0) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ChainConfigError(
                f"chain: the rpc backend needs an http(s):// JSON-RPC URL, not {url!r}"
            )
        self._url = url
        self._timeout = request_timeout

    @property
    def url(self) -> str:
        return self._url

    @property
    def node(self) -> str:
        return f"the JSON-RPC node at {self._url}"

    async def start(self) -> None:
        if self._w3 is None:
            self._w3 = AsyncWeb3(_http_provider(self._url, self._timeout))


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
            self._w3 = AsyncWeb3(_http_provider(self._url, self._request_timeout))
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


def open_backend(
    kind: str,
    *,
    state_dir: Path | None = None,
    rpc_url: str | None = None,
    anvil_executable: Path | None = None,
    block_time: float | None = None,
) -> ChainBackend:
    """The backend named by ``kind`` (one of :data:`BACKEND_KINDS`), not yet started.

    Raises :class:`ChainConfigError` for an unknown kind or a missing argument.
    """
    if kind == "embedded":
        return EmbeddedBackend()
    if kind == "anvil":
        if state_dir is None:
            raise ChainConfigError("chain: the anvil backend needs a state directory")
        return AnvilBackend(state_dir, executable=anvil_executable, block_time=block_time)
    if kind == "rpc":
        if not rpc_url:
            raise ChainConfigError("chain: the rpc backend needs the node's URL (chain rpc_url)")
        return RpcBackend(rpc_url)
    raise ChainConfigError(
        f"chain: unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}"
    )
