"""The errors dfpir raises: each message says what went wrong and what to do about it.

Only commands print them and choose exit codes; the library just raises.
"""


class DfpirError(Exception):
    """Base of every error a user can act on."""


class InputError(DfpirError, ValueError):
    """A tensor, image or option the caller passed is not what is needed."""


class UnknownDegradationError(DfpirError, KeyError):
    """A degradation name that is neither a known name nor an alias."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(DfpirError):
    """A checkpoint that cannot be read, or whose weights do not fit the network."""


class ClipUnavailableError(DfpirError):
    """The CLIP text encoder cannot run: open_clip or its weights are missing."""


class DatasetError(DfpirError):
    """A dataset folder that does not hold what its layout needs."""


class HubError(DfpirError):
    """The Hugging Face Hub could not be reached, refused access, or sent something unusable."""


class TrainingError(DfpirError):
    """A training run that cannot start, resume or go on (diverged, incompatible resume state)."""


class ExportDependencyError(DfpirError):
    """An optional package an export needs (onnx, onnxruntime) is not installed."""
