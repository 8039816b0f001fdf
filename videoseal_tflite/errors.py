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
