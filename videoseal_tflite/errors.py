"""Error types. Each carries one human sentence; the CLI prints it as one line and exits non-zero."""


class VsTfliteError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line."""

    exit_code = 2


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
    exit_code = 3


class ParityFailed(VsTfliteError):
    exit_code = 4
