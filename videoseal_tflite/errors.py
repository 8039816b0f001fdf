"""Error types. Each carries one human sentence; the CLI prints it as one line and exits non-zero.

Exit codes, the same for every command: 0 ok; 1 a check failed or a variant/part failed to build;
2 bad input (or the environment refused: permissions, full disk); 130 interrupted (Ctrl-C, SIGTERM).
"""

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class VsTfliteError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line."""

    exit_code = EXIT_BAD_INPUT


class UnknownCard(VsTfliteError):
    pass


class InvalidCard(VsTfliteError):
    pass


class CheckpointUnavailable(VsTfliteError):
    pass


class InvalidCheckpoint(VsTfliteError):
    pass


class NbitsMismatch(VsTfliteError):
    pass


class OutputNotWritable(VsTfliteError):
    pass


class InvalidModelFile(VsTfliteError):
    pass


class InvalidImage(VsTfliteError):
    pass


class InvalidMessage(VsTfliteError):
    pass


class UnknownVariant(VsTfliteError):
    pass


class ConversionFailed(VsTfliteError):
    exit_code = EXIT_CHECK_FAILED


class ParityFailed(VsTfliteError):
    exit_code = EXIT_CHECK_FAILED


class InvalidVideo(VsTfliteError):
    pass


class UnsupportedOutput(VsTfliteError):
    pass


class OutputIsInput(VsTfliteError):
    """The output path names the input file (the same inode): writing would replace the original."""


class ModelDamaged(VsTfliteError):
    """A .tflite whose bytes differ from its release manifest's sha256."""


class ModelOutputNotFinite(VsTfliteError):
    """A model returned NaN or infinity: a damaged or wrongly built file."""


class InvalidOption(VsTfliteError):
    """Options that contradict each other or the file they act on (beyond what argparse checks)."""


class ArtifactsMissing(VsTfliteError):
    """The artifact folder lacks what a command reads (no card, file or report): build it first."""


class InvalidReport(VsTfliteError):
    """A report.json that cannot be read."""


class InvalidShard(VsTfliteError):
    """A folder given to `merge` that is not a shard of artifacts (no readable manifest)."""


class BenchFailed(VsTfliteError):
    exit_code = EXIT_CHECK_FAILED


class UnsupportedAnimation(VsTfliteError):
    """An animated image (GIF, APNG, WebP): marking only its first frame would silently drop the rest."""


class ExtraNotInstalled(VsTfliteError):
    """A command needs an optional extra (`pip install videoseal-tflite[NAME]`, or `make setup`) that is missing."""
