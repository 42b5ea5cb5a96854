"""Stage preprocess: the optional resize cache of the prepared images and the train split's
channel statistics (data/preprocessed; see dml/data/preprocess.py)."""

from __future__ import annotations

from dml.config import Params
from dml.data.preprocess import build_preprocessed
from dml.paths import PREPARED, PREPROCESSED
from stages._common import run_stage


def preprocess(params: Params) -> None:
    print(build_preprocessed(PREPARED, PREPROCESSED, params.preprocess).line())


def main() -> None:
    run_stage("preprocess", preprocess)


if __name__ == "__main__":
    main()
