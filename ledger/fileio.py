"""Durable, atomic file writes: the one way medtrail replaces a file on disk.

:func:`atomic_write` writes a temporary file in the target's directory (``mkstemp``: same
filesystem, so the final move is atomic), gives it its mode, writes and ``fsync`` s it, moves
it into place and ``fsync`` s the directory, so that after a crash the path holds either the
old content or the new, never a mix, and a completed write survives a power cut. On any
failure the temporary file is removed and the previous content of the path is untouched.

Used for the wallet's keystores and index, the deployment file, and the regulator's state
and mirror files. Standard library only (the regulator's light install needs it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["append_durably", "atomic_write", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """``fsync`` a directory, so that a file created, renamed or removed in it stays so after
    a crash. A filesystem or platform that cannot sync directories is not an error: the
    entry is in place, there is nothing more a caller could do."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o600, overwrite: bool = True
) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically and durably, with ``mode``.

    ``overwrite`` True replaces an existing file (``os.replace``); False refuses one
    (``os.link``, atomic: :class:`FileExistsError` when ``path`` exists, even if it appeared
    during the write). The directory must exist. Errors are the :class:`OSError` s of the
    step that failed; the temporary file never outlives the call.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        # After a replace the temporary name is gone; after a link (or a failure) it is litter.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(directory)


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` and ``fsync`` it before returning: a line appended
    survives a power cut. Not atomic: a crash may leave a torn last line, which the reader
    must cut off (an append-only log's reader does)."""
    created = not path.exists()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        fsync_dir(path.parent)
