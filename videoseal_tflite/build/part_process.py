"""One part of a card built in a child Python while the parent builds the other (`pipeline.convert_card`).

`python -m videoseal_tflite.build.part_process FOLDER` reads FOLDER/job.pickle (a `pipeline.PartJob`), runs
`pipeline.build_part` and writes ("ok", its result) or ("error", the exception) to FOLDER/result.pickle, whole or
not at all. Its fds 1 and 2 are the parent's, so third-party output goes where the parent's goes (the step's log).
"""

from __future__ import annotations

import pickle
import signal
import sys
import traceback
import warnings
from pathlib import Path

from videoseal_tflite.build.pipeline import build_part
from videoseal_tflite.errors import ConversionFailed, VsTfliteError
from videoseal_tflite.store.atomic import write_bytes_atomic


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM from the parent unwinds like Ctrl-C: temp files are removed


def main(folder: Path) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    warnings.filterwarnings("ignore")
    job = pickle.loads((folder / "job.pickle").read_bytes())
    try:
        result: tuple[str, object] = ("ok", build_part(job))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure goes back to the parent, which raises it
        if not isinstance(exc, VsTfliteError):
            traceback.print_exc()  # a bug's trace: into the step's log, as in the parent
        result = ("error", exc)
    try:
        data = pickle.dumps(result)
    except Exception as exc:  # an exception that does not pickle still reaches the parent, as its text
        data = pickle.dumps(("error", ConversionFailed(f"{type(result[1]).__name__}: {result[1]} ({exc})")))
    write_bytes_atomic(folder / "result.pickle", data)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
