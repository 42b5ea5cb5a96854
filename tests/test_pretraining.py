"""Pretraining on the disjoint source classes (dml/training/pretrain.py): it learns its classification
task, is reproducible, round-trips through its file, and training starts from exactly its features."""

from __future__ import annotations

import hashlib

import pytest
import torch

from dml.config import parse_params
from dml.training.pretrain import PretrainedBackbone, load_pretrained, pretrain, save_pretrained
from dml.training.metric import build_training, training_fingerprint
from tests.test_training import STATS, synthetic_split, tiny_params


def pretrain_params(**knobs):
    return parse_params({
        "model": {"embed_dim": 16},
        "pretrain": {"epochs": 6, "batch_size": 24, "lr": 0.003, **knobs},
        "train": {"num_threads": 1},
        "transforms": {"size": 16, "resize": 16},
    })


def test_pretraining_learns_the_source_classes_reproducibly():
    source = synthetic_split(classes=6, per_class=12, seed=3)
    model, record = pretrain(pretrain_params(), source, STATS, progress=False)
    # chance is 1/6; the separable prototypes are learnt within a few epochs
    assert record[-1].accuracy > 0.9 and record[-1].loss < record[0].loss
    again, _ = pretrain(pretrain_params(), source, STATS, progress=False)
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, again.features.state_dict()[key]), key
    other, _ = pretrain(pretrain_params(seed=1), source, STATS, progress=False)
    assert not torch.equal(model.features[0].weight, other.features[0].weight)


def test_saved_backbone_round_trips_with_its_hash(tmp_path):
    model, _ = pretrain(pretrain_params(epochs=1), synthetic_split(classes=6, per_class=8), STATS, progress=False)
    path = tmp_path / "pretrained.pt"
    save_pretrained(path, model, {"epochs": 1})
    loaded = load_pretrained(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(loaded.features) == set(model.features.state_dict())
    assert all(torch.equal(loaded.features[k], v) for k, v in model.features.state_dict().items())
    save_pretrained(path, None, {"epochs": 0})
    assert load_pretrained(path) is None


def test_training_starts_from_the_pretrained_features_with_a_fresh_head():
    model, _ = pretrain(pretrain_params(epochs=1), synthetic_split(classes=6, per_class=8), STATS, progress=False)
    init = PretrainedBackbone({k: v.clone() for k, v in model.features.state_dict().items()}, "a" * 64)
    split, params = synthetic_split(), tiny_params()
    started = build_training(params, split, STATS, init).model
    scratch = build_training(params, split, STATS).model
    for key, value in init.features.items():
        assert torch.equal(started.features.state_dict()[key], value), key
    assert not torch.equal(started.features[0].weight, scratch.features[0].weight)
    assert torch.equal(started.head.weight, scratch.head.weight)  # the head: the same seeded init as from scratch
    assert training_fingerprint(params, STATS, init) != training_fingerprint(params, STATS)


def test_interrupted_pretraining_resumes_to_identical_weights(tmp_path):
    """Reference: the uninterrupted run. Interrupted after epoch 1 of 3 (as Ctrl-C), the rerun
    resumes from the checkpoint, runs epochs 2-3 only and ends bit-identical."""
    source, params = synthetic_split(classes=6, per_class=8), pretrain_params(epochs=3)
    reference, reference_record = pretrain(params, source, STATS, progress=False)
    checkpoint = tmp_path / "pretrain.pt"

    def interrupt(epoch):
        if epoch.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(params, source, STATS, progress=False, checkpoint=checkpoint, on_epoch=interrupt)
    ran = []
    resumed, record = pretrain(params, source, STATS, progress=False, checkpoint=checkpoint, on_epoch=lambda e: ran.append(e.epoch))
    assert ran == [2, 3]
    assert [(e.loss, e.accuracy) for e in record] == [(e.loss, e.accuracy) for e in reference_record]
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    # a checkpoint of another pretraining is not resumed
    ran.clear()
    pretrain(pretrain_params(epochs=3, seed=5), source, STATS, progress=False, checkpoint=checkpoint, on_epoch=lambda e: ran.append(e.epoch))
    assert ran == [1, 2, 3]
