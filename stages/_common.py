"""What every stage entry point shares: load the validated params, turn expected failures
(bad params, missing or corrupt inputs) into one line on stderr and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from dml.config import Params, load_params
from dml.errors import ConfigError, DatasetError, TrackingError, TrainingError
from dml.paths import PARAMS

EXPECTED_ERRORS: tuple[type[Exception], ...] = (ConfigError, DatasetError, FileNotFoundError, TrackingError, TrainingError)


def run_stage(name: str, body: Callable[[Params], None]) -> None:
    try:
        params = load_params(PARAMS)
        body(params)
    except EXPECTED_ERRORS as err:
        print(f"error in stage {name}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
