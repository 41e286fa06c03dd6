"""Typed errors: every bad input raises one of these with a message that names the culprit."""


class PromptblendError(Exception):
    """Base class of every error promptblend raises on bad input."""


class BadImageError(PromptblendError):
    """An image file is corrupt, empty, not an image, or too large to decode safely."""

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"bad image {path}: {reason}")


class ImageSetError(PromptblendError):
    """An image folder is empty, missing, or has clashing ids."""


class AlignmentError(PromptblendError):
    """Ids and rows do not line up (count, duplicates, missing or extra ids)."""


class EmbeddingError(PromptblendError):
    """An embedding array has the wrong shape or dtype, or holds NaN/inf."""


class RunError(PromptblendError):
    """A run folder is missing files or is inconsistent."""


class SubmissionError(PromptblendError):
    """A submission CSV breaks the competition's format."""


class TruthError(PromptblendError):
    """A truth prompts.csv is missing columns, ids or text."""


class ConfigError(PromptblendError):
    """A configuration names an unknown key, predictor or value."""


class SetMismatchError(ConfigError):
    """A set folder being resumed or extended was made with other settings or prompts."""


class ModelNotFoundError(PromptblendError):
    """A model path or hub name cannot be resolved (offline or missing)."""


class ClusterError(PromptblendError):
    """A compute cluster (Ray) cannot be reached at the address given, or cannot be started."""


class BlendError(PromptblendError):
    """A blend or tuning request cannot be carried out (too few runs, clashing run names, bad parameters)."""


class BankError(PromptblendError):
    """A prompt bank or its index is empty, unreadable, incomplete or inconsistent."""


class KeyModelMismatchError(BankError):
    """An index's keys were embedded by a different model than the one used to query it."""


class ShardError(ImageSetError):
    """A WebDataset shard is missing or truncated, or a key in it lacks its image or text, repeats or is not UTF-8."""

    def __init__(self, shard: str, key: str | None, reason: str):
        self.shard, self.key, self.reason = shard, key, reason
        where = f"shard {shard}" + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {reason}")


class OutputError(PromptblendError):
    """An output path cannot be written: not a regular file (or folder), or not writable."""


class DiskFullError(PromptblendError):
    """A write ran out of disk space (ENOSPC) or past a file-size limit (EFBIG); says how much is needed when known."""

    def __init__(self, message: str, path=None, needed: int | None = None, free: int | None = None):
        self.path, self.needed, self.free = path, needed, free
        super().__init__(message)
