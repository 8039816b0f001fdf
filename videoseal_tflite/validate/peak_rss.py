"""`python -m videoseal_tflite.validate.peak_rss MODULE ARGS...`: run MODULE as `__main__`, then print the process's own
peak resident set size as the last line on stderr (`peak_rss_mb=N`).

Why not the parent's `os.wait4` rusage: on Linux a child's `ru_maxrss` carries the high-water mark of the
address space it was forked from (Python starts children with vfork), so a child of a 3 GB test process reports
3 GB whatever it used itself. `VmHWM` in /proc/self/status belongs to the address space after exec.
"""

from __future__ import annotations

import runpy
import sys

MARKER = "peak_rss_mb="


def own_peak_rss_mb() -> float | None:
    """This process's peak RSS (VmHWM) in MB, or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def parse(stderr: str) -> float | None:
    """The figure printed by `main`, from a child's stderr."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith(MARKER):
            return float(line[len(MARKER) :])
    return None


def main() -> int:
    module, sys.argv = sys.argv[1], sys.argv[1:]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        print(f"{MARKER}{own_peak_rss_mb()}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
