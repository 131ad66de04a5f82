"""The regulator tools' state and mirror files are written through ledger.fileio."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scripts._common import atomic_write


def test_state_files_are_written_durably_in_a_new_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(f"{kind} {os.readlink(f'/proc/self/fd/{fd}')}")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "state" / "last.json"
    atomic_write(path, "{}\n")
    atomic_write(path, '{"treeSize": 1}\n')
    assert path.read_text() == '{"treeSize": 1}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.json"]
    assert synced[-1] == f"dir {path.parent}"
    assert synced[-2].startswith(f"file {path.parent}/.last.json.")
