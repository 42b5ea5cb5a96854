"""User-facing failures that stages report as one line (see stages/_common.py). Ground floor:
every layer raises them, so they live below all of it."""


class ConfigError(ValueError):
    """A one-line, user-facing description of what is wrong in params.yaml."""


class DatasetError(ValueError):
    """A one-line description of what is wrong with a dataset or a stage input on disk."""


class TrainingError(RuntimeError):
    """Training cannot go on (say, the loss became non-finite): one line naming where."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used (one line naming the URI)."""
