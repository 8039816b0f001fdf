"""A quiet terminal: during long steps, everything third-party goes to a log file, the terminal keeps ours.

Third-party output comes from Python (absl warnings, ai-edge-quantizer's prints and progress bars) and from
native code writing straight to file descriptors 1 and 2 (TensorFlow's banners, XNNPACK's INFO lines, child
processes). So the redirection is at the descriptor level: fds 1 and 2 point at the log file for the
duration, and our progress bars and summary write to a saved copy of the terminal's stderr (`stream()`).
The log lands in `<artifacts>/<card>/logs/<step>.log` when that folder exists at the end (something was
built there), else it is removed with nothing left behind. `-v` (verbose) turns all of this off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

_terminal: dict[str, IO[str]] = {}


def out() -> IO[str]:
    """Where our results go: the terminal's stdout, even while third-party output is redirected."""
    return _terminal.get("out", sys.stdout)


def stream() -> IO[str]:
    """Where our progress bars go: the terminal's stderr, even while third-party output is redirected."""
    return _terminal.get("err", sys.stderr)


@contextlib.contextmanager
def quiet(log_dir: Path | None, step: str, enabled: bool = True) -> Iterator[Path | None]:
    """Send fds 1/2 to a log file for the block; yields the temporary log path (None when disabled).
    The log is kept as `<log_dir>/logs/<step>.log` when `log_dir` exists at the end."""
    if not enabled:
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd, tmp_name = tempfile.mkstemp(prefix=f"videoseal-tflite-{step}-", suffix=".log")
    saved_out, saved_err = os.dup(1), os.dup(2)
    opened = []
    for name, stream, saved in (("out", sys.stdout, saved_out), ("err", sys.stderr, saved_err)):
        _terminal[name] = _terminal_handle(stream, saved, opened)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield Path(tmp_name)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for handle in (saved_out, saved_err, fd):
            os.close(handle)
        for handle in opened:
            handle.close()
        _terminal.clear()
        _keep_log(Path(tmp_name), log_dir, step)


def _terminal_handle(stream: IO[str], saved_fd: int, opened: list) -> IO[str]:
    """Our stream for the block: a copy of the saved descriptor when `stream` writes to fd 1 or 2 (a terminal,
    a pipe), else `stream` itself (a capture object, as pytest's capsys, keeps receiving our lines)."""
    try:
        if stream.fileno() in (1, 2):
            handle = os.fdopen(os.dup(saved_fd), "w", buffering=1)
            opened.append(handle)
            return handle
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        pass
    return stream


def _keep_log(tmp: Path, log_dir: Path | None, step: str) -> None:
    """Move the log beside the card's artifacts when that folder exists; otherwise drop it."""
    try:
        if log_dir is not None and Path(log_dir).is_dir() and tmp.stat().st_size:
            logs = Path(log_dir) / "logs"
            logs.mkdir(exist_ok=True)
            os.replace(tmp, logs / f"{step}.log") if _same_fs(tmp, logs) else _copy(tmp, logs / f"{step}.log")
    except OSError:
        pass  # a log we cannot keep is no reason to fail the step
    finally:
        tmp.unlink(missing_ok=True)


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)
