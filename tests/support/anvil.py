"""An anvil process for tests: start, wait until it answers, drive it over JSON-RPC, stop.

``node_modules/.bin/anvil`` (npm ``@foundry-rs/anvil``) is a Node.js wrapper that spawns the
native binary as its child. The harness therefore starts it in a process group of its own and
signals the whole group: stopping, killing (a crash) or freezing (a hung node) reaches the
native process too, and no anvil outlives the tests (every running instance is also stopped at
interpreter exit).

Anvil binds to 127.0.0.1 only. Its dev accounts come from the well-known mnemonic and are
derived here with eth-account's HD wallet, not hard-coded.

Usage::

    with Anvil() as node:
        w3 = Web3(HTTPProvider(node.url))
        snapshot = node.snapshot()
        node.time_travel(node.timestamp() + 3600)
        node.revert(snapshot)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

__all__ = [
    "ANVIL",
    "DEV_MNEMONIC",
    "Anvil",
    "AnvilError",
    "AnvilRpcError",
    "anvil_available",
    "free_port",
]

#: The anvil launcher installed by ``npm ci`` (package ``@foundry-rs/anvil``, pinned).
ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"

#: Anvil's (and Hardhat's) default development mnemonic.
DEV_MNEMONIC = "test test test test test test test test test test test junk"

HOST = "127.0.0.1"

Account.enable_unaudited_hdwallet_features()


def anvil_available() -> bool:
    """Whether the anvil launcher is installed (``make node``)."""
    return ANVIL.is_file() and os.access(ANVIL, os.X_OK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class AnvilError(RuntimeError):
    """Anvil could not be started, or is not running."""


class AnvilRpcError(AnvilError):
    """Anvil answered a JSON-RPC request with an error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code = int(error.get("code", 0))
        self.message = str(error.get("message", ""))
        self.data = error.get("data")
        super().__init__(f"{method}: {self.message} (code {self.code})")


_RUNNING: weakref.WeakSet[Anvil] = weakref.WeakSet()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        nodes = list(_RUNNING)
    for node in nodes:
        with contextlib.suppress(Exception):
            node.kill()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel send SIGTERM to the launcher if the test process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Anvil:
    """One anvil node on 127.0.0.1.

    :param port: TCP port; a free one by default. It stays the same across :meth:`stop` /
        :meth:`start`, so that clients see a node go down and come back at the same URL.
    :param chain_id: the chain id anvil reports.
    :param block_time: mine a block every this many seconds instead of one per transaction.
    :param no_mining: never mine by itself (``--no-mining``): transactions wait in the pool
        until :meth:`mine` (or until automine is switched back on with :meth:`set_automine`).
    :param state_file: dump the chain to this file when stopped gracefully, and load it at
        start, so a :meth:`stop` / :meth:`start` cycle keeps the chain (``--state``).
    :param accounts: how many dev accounts anvil funds.
    :param balance: ether given to each dev account.
    :param startup_timeout: seconds to wait for the node to answer JSON-RPC.
    :param extra_args: more command-line options.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int = 31337,
        block_time: float | None = None,
        no_mining: bool = False,
        state_file: Path | None = None,
        accounts: int = 10,
        balance: int = 10_000,
        startup_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if block_time is not None and no_mining:
            raise ValueError("block_time and no_mining are exclusive")
        self.port = port if port is not None else free_port()
        self.chain_id = chain_id
        self.block_time = block_time
        self.no_mining = no_mining
        self.state_file = state_file
        self.account_count = accounts
        self.balance = balance
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir = tempfile.TemporaryDirectory(prefix="medtrail-anvil-")
        self._log_path = Path(self._log_dir.name) / "anvil.log"
        self._request_id = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ process

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the launcher process is alive (it may be frozen)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the launcher (also the id of the process group holding anvil)."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        cmd = [
            str(ANVIL),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(self.account_count),
            "--balance",
            str(self.balance),
            "--mnemonic",
            DEV_MNEMONIC,
            "--silent",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", f"{self.block_time:g}"]
        if self.no_mining:
            cmd.append("--no-mining")
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
        cmd += self.extra_args
        return cmd

    def start(self) -> Anvil:
        """Start anvil and wait until it answers JSON-RPC (or raise :class:`AnvilError`)."""
        if self.running:
            return self
        if not anvil_available():
            raise AnvilError(f"anvil is not installed at {ANVIL}; run `make node`")
        log = self._log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise AnvilError(
                    f"anvil exited with status {self._process.returncode if self._process else '?'}"
                    f" before answering on {self.url}:\n{self.output()}"
                )
            try:
                chain_id = int(self.rpc("eth_chainId", [], timeout=1.0), 16)
            except (OSError, AnvilError) as exc:
                last_error = exc
                time.sleep(0.05)
                continue
            if chain_id != self.chain_id:
                raise AnvilError(
                    f"something else answers on {self.url} (chain id {chain_id}, expected "
                    f"{self.chain_id})"
                )
            return
        raise AnvilError(
            f"anvil did not answer on {self.url} within {self.startup_timeout:g} s "
            f"(last error: {last_error}):\n{self.output()}"
        )

    def output(self, limit: int = 4000) -> str:
        """The tail of anvil's stdout/stderr (``--silent`` keeps it to errors)."""
        try:
            data = self._log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil gracefully (SIGINT: it dumps ``state_file`` if set); kill it if it hangs."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGCONT)  # a frozen node cannot handle SIGINT
            self._signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait(timeout)
        # The native child may outlive the launcher. With a state file, let it finish writing
        # it (slower on a busy machine: killed half-way, the next start loses the chain).
        if self.state_file is not None:
            self._wait_group_gone(process.pid, timeout)
        self._signal(signal.SIGKILL)
        self._wait_port_free(timeout)
        self._forget()

    @staticmethod
    def _wait_group_gone(group: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)

    def kill(self) -> None:
        """Kill anvil at once (SIGKILL to the whole group), as a crash would."""
        process = self._process
        if process is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10.0)
        self._wait_port_free(5.0)
        self._forget()

    def _forget(self) -> None:
        self._process = None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex((HOST, self.port)) != 0:
                    return
            time.sleep(0.05)

    def restart(self) -> Anvil:
        """:meth:`stop` then :meth:`start` on the same port."""
        self.stop()
        return self.start()

    def freeze(self) -> None:
        """Suspend anvil (SIGSTOP): connections are accepted by the kernel but never answered."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen anvil (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        self._log_dir.cleanup()

    def __del__(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(Exception):
                self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Anvil {self.url} chain {self.chain_id} {state}>"

    # ------------------------------------------------------------------ accounts

    @cached_property
    def accounts(self) -> tuple[LocalAccount, ...]:
        """The dev accounts anvil funds, derived from :data:`DEV_MNEMONIC` (BIP-44 path)."""
        return tuple(
            Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
            for i in range(self.account_count)
        )

    @property
    def private_keys(self) -> tuple[bytes, ...]:
        """The dev accounts' private keys."""
        return tuple(bytes(account.key) for account in self.accounts)

    # ------------------------------------------------------------------ JSON-RPC

    def rpc(
        self, method: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Send one JSON-RPC request and return its ``result`` (errors raise AnvilRpcError)."""
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params or [])}
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise AnvilRpcError(method, answer["error"])
        return answer.get("result")

    def snapshot(self) -> str:
        """``evm_snapshot``: an id to :meth:`revert` to. Anvil forgets an id once used."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        """``evm_revert``: back to the snapshot (and every later snapshot is dropped)."""
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now, with whatever the pool holds."""
        self.rpc("anvil_mine", [hex(blocks)])

    def set_automine(self, enabled: bool) -> None:
        """Switch mining one block per transaction on or off."""
        self.rpc("evm_setAutomine", [enabled])

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """The next block gets this timestamp (later blocks continue from it)."""
        self.rpc("evm_setNextBlockTimestamp", [timestamp])

    def time_travel(self, timestamp: int) -> None:
        """Mine one block at ``timestamp``, which must be after the latest block's."""
        self.set_next_block_timestamp(timestamp)
        self.rpc("evm_mine")

    def timestamp(self) -> int:
        """The latest block's timestamp."""
        block = self.rpc("eth_getBlockByNumber", ["latest", False])
        return int(block["timestamp"], 16)

    def block_number(self) -> int:
        """The latest block's number."""
        return int(self.rpc("eth_blockNumber"), 16)

    def set_balance(self, address: str, wei: int) -> None:
        """``anvil_setBalance``."""
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def drop_transaction(self, tx_hash: bytes | str) -> None:
        """``anvil_dropTransaction``: remove a pending transaction from the pool."""
        value = tx_hash if isinstance(tx_hash, str) else "0x" + tx_hash.hex()
        self.rpc("anvil_dropTransaction", [value])

    def pool(self) -> dict[str, Any]:
        """``txpool_content``: pending and queued transactions by sender and nonce."""
        content: dict[str, Any] = self.rpc("txpool_content")
        return content
