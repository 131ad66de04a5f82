"""ledger.fileio: the one atomic, durable file write, and the three writers that use it."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.model import Deployment
from ledger.fileio import atomic_write, fsync_dir
from wallets.keystore import write_private_file


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each ``os.fsync`` synced: ``file <path>`` or ``dir <path>`` (the real fsync runs)."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append(f"{kind} {os.readlink(f'/proc/self/fd/{fd}')}")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_text_as_utf8_and_bytes_as_they_are(tmp_path: Path) -> None:
    atomic_write(tmp_path / "t", "é\n")
    atomic_write(tmp_path / "b", b"\x00\xff")
    assert (tmp_path / "t").read_bytes() == "é\n".encode()
    assert (tmp_path / "b").read_bytes() == b"\x00\xff"
    assert _listing(tmp_path) == ["b", "t"]  # no temporary file left


def test_fsyncs_the_file_then_its_directory(tmp_path: Path, synced: list[str]) -> None:
    atomic_write(tmp_path / "f", "data")
    assert len(synced) == 2
    assert synced[0].startswith(f"file {tmp_path}/.f.")  # the temporary file, before the move
    assert synced[1] == f"dir {tmp_path}"


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "public", "x", mode=0o644)
    finally:
        os.umask(old)
    atomic_write(tmp_path / "private", "x")
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_replaces_by_default(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_write(path, "old")
    atomic_write(path, "new")
    assert path.read_text() == "new"
    assert _listing(tmp_path) == ["f"]


def test_refuses_an_existing_file_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_write(path, "old")
    with pytest.raises(FileExistsError):
        atomic_write(path, "new", overwrite=False)
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["f"]
    atomic_write(tmp_path / "g", "new", overwrite=False)
    assert (tmp_path / "g").read_text() == "new"
    assert _listing(tmp_path) == ["f", "g"]


def _fail(exc: BaseException) -> Callable[..., Any]:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


@pytest.mark.parametrize("step", ["write", "fsync", "replace", "fchmod"])
def test_a_failed_step_keeps_the_old_content_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "f"
    atomic_write(path, "old")
    monkeypatch.setattr(os, step, _fail(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["f"]


def test_an_interrupted_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", _fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "f", "new")
    monkeypatch.undo()
    assert _listing(tmp_path) == []


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "absent" / "f", "x")
    assert _listing(tmp_path) == []


def test_fsync_dir_syncs_the_directory(tmp_path: Path, synced: list[str]) -> None:
    fsync_dir(tmp_path)
    assert synced == [f"dir {tmp_path}"]


# --------------------------------------------------------------------------- the writers


def _deployment() -> Deployment:
    return Deployment(
        chain_id=1337,
        institution_registry="0x" + "11" * 20,
        audit_log="0x" + "22" * 20,
        consent_registry="0x" + "33" * 20,
        block_number=7,
        sources_hash="0x" + "ab" * 32,
    )


def test_the_deployment_file_is_written_durably(tmp_path: Path, synced: list[str]) -> None:
    path = tmp_path / "deployment.json"
    path.write_text("stale")
    _deployment().write(path)
    assert Deployment.read(path) == _deployment()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert synced[-1] == f"dir {tmp_path}"
    assert any(s.startswith(f"file {tmp_path}/") for s in synced)
    assert _listing(tmp_path) == ["deployment.json"]


def test_the_keystore_writer_is_durable(tmp_path: Path, synced: list[str]) -> None:
    write_private_file(tmp_path / "k", b"secret")
    assert (tmp_path / "k").read_bytes() == b"secret"
    assert synced[-1] == f"dir {tmp_path}"
    assert any(s.startswith(f"file {tmp_path}/") for s in synced)


#: The only other places allowed to move, link or fsync files themselves, and why.
_OWN_SYNC: dict[str, str] = {
    "audit_log.py": "appends to the regulator's mirror and fsyncs it (an append, not a replace)",
}
_PRIMITIVES = re.compile(r"\bos\.(replace|link|fsync)\(|\.replace\(path\)|\.rename\(path\)")


def test_no_other_module_writes_files_atomically_by_itself() -> None:
    """One atomic write: every replace, link and fsync of a file goes through ledger.fileio."""
    root = Path(__file__).resolve().parents[3]
    offenders = []
    for package in ("ledger", "api", "wallets", "scripts"):
        for source in sorted((root / package).rglob("*.py")):
            if source.name == "fileio.py" and source.parent.name == "ledger":
                continue
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if _PRIMITIVES.search(line) and source.name not in _OWN_SYNC:
                    offenders.append(f"{source.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


def test_append_durably_creates_then_appends(tmp_path: Path) -> None:
    from ledger.fileio import append_durably

    path = tmp_path / "alerts.jsonl"
    append_durably(path, '{"id": 1}\n')
    append_durably(path, '{"id": 2}\n')
    assert path.read_text(encoding="utf-8") == '{"id": 1}\n{"id": 2}\n'
