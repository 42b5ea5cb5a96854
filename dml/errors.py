"""User-facing failures that stages report as one line (see stages/_common.py)."""


class DatasetError(ValueError):
    """A one-line description of what is wrong with a dataset or a stage input on disk."""


class TrainingError(RuntimeError):
    """Training cannot go on (say, the loss became non-finite): one line naming where."""
