"""One anvil node for a benchmark run: start, wait until it answers, stop.

A minimal copy of the start/stop logic of ``tests/support/anvil.py`` (the benchmarks do not
import the test suite): ``node_modules/.bin/anvil`` is a Node.js launcher that spawns the
native binary, so it runs in a process group of its own and the whole group is signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from functools import cached_property
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from benchmarks._common import REPO

ANVIL = REPO / "node_modules" / ".bin" / "anvil"
DEV_MNEMONIC = "test test test test test test test test test test test junk"
HOST = "127.0.0.1"

Account.enable_unaudited_hdwallet_features()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Anvil:
    """An anvil node on 127.0.0.1 (automine: one block per transaction)."""

    def __init__(self, *, accounts: int = 5, chain_id: int = 31337) -> None:
        self.port = free_port()
        self.chain_id = chain_id
        self.account_count = accounts
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Anvil:
        if not os.access(ANVIL, os.X_OK):
            raise RuntimeError(f"anvil is not installed at {ANVIL}; run `make node`")
        command = [
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
            "1000000",
            "--mnemonic",
            DEV_MNEMONIC,
            "--silent",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"anvil exited with status {self._process.returncode}")
            try:
                if int(self.rpc("eth_chainId"), 16) == self.chain_id:
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @cached_property
    def accounts(self) -> tuple[LocalAccount, ...]:
        """The funded dev accounts (derived from the well-known mnemonic)."""
        return tuple(
            Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
            for i in range(self.account_count)
        )

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]
