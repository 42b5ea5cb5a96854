"""Stage configure: resolve params.yaml into the training config the train stage depends on.

The file holds only what shapes a trained model: the selected loss, miner and sampler with their
own knobs (``miner.name: auto`` and ``model.normalize: auto`` resolved), model, optimiser and
schedule. DVC reruns this cheap stage on any edit of those sections, but train only when the
file's content changes: editing the knob of a loss that is not selected retrains nothing.
"""

from __future__ import annotations

from dml.config import Params
from dml.io import write_json
from dml.paths import TRAIN_CONFIG
from stages._common import run_stage


def configure(params: Params) -> None:
    config = params.training_config()
    write_json(TRAIN_CONFIG, config)
    print(f"{TRAIN_CONFIG}: loss {config['loss']['name']}, miner {config['miner']['name']}, sampler {config['sampler']['name']}")


def main() -> None:
    run_stage("configure", configure)


if __name__ == "__main__":
    main()
