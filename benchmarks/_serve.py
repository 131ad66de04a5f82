"""Start the API server in other processes, watch their CPU time and memory through /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from benchmarks._common import REPO
from tests.support.anvil import free_port

_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += children(int(child))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``python -m benchmarks._server`` on a free port, with the given environment."""

    def __init__(
        self, env: dict[str, str], *, workers: int = 1, log_path: Path, floor: bool = False
    ) -> None:
        self.port = free_port()
        self.floor = floor
        self.env = env
        self.workers = workers
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks._server",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    *(["--floor"] if self.floor else []),
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 240  # a loaded machine imports slowly
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                # With several workers, wait until all have started.
                if ready and len(self.pids()) >= self.workers + (1 if self.workers > 1 else 0):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log_path.read_text()[-3000:]}")

    def pids(self) -> list[int]:
        assert self._process is not None
        return [
            pid
            for pid in children(self._process.pid)
            if "python" in Path(f"/proc/{pid}/comm").read_text(errors="replace").lower()
            or pid == self._process.pid
        ]

    def worker_pids(self) -> list[int]:
        """The processes serving requests (the workers; the process itself if only one)."""
        pids = self.pids()
        return pids[1:] if self.workers > 1 else pids[:1]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
