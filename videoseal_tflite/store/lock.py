"""One writer per artifact folder: a second concurrent run stops with a clear message instead of racing."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from videoseal_tflite.errors import VsTfliteError

LOCK_NAME = ".videoseal-tflite.lock"


class FolderLocked(VsTfliteError):
    pass


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on `folder` (re-entrant within one process)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _held:
        yield
        return
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise FolderLocked(
                f"another videoseal-tflite run (pid {owner}) is writing to {folder}; wait for it to finish"
            ) from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


_held: set[str] = set()


@contextlib.contextmanager
def updating(folder: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on `folder` itself (its directory descriptor: no lock file) for a
    read-modify-write of a file in it that several processes of one run update (the manifest, the quantize log).
    Independent of `output_lock`, which holds a file inside the folder."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock
