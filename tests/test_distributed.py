"""Distributed training equals the one-device run of the same global batch
(dml/training/distributed.py). Reference: the same code on one process. For one method of each
kind, two gloo ranks on loopback give the first step's gradient of every model and loss
parameter within 1e-5 relative, and the loss of each of the first 20 steps within 1e-4 relative.

The 20-step comparison runs in float64. In float32 the two runs differ from the first step by
rounding alone (a slice's convolutions and the gradient sum over ranks add in another order,
about 1e-7), and Adam carries such differences forward, growing a few times per step; with a
stochastic miner (distance, rho_distance) or an embedded sampler, whose discrete choices follow
the embeddings, they reach 1e-4 after about 10 steps and then change a pick. In float64 the same
computation stays within 1e-9, so a real difference (a wrong slice, a wrong gradient scale, ranks
mining different tuples) would show at once. In float32 the first-step gradients and the first
losses are checked too (5 steps; 3 for the embedded sampler, whose fourth batch's picks already
follow rounding)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import ddp_worker
from dml.config import parse_params
from dml.data.loading import EpochBatches
from dml.errors import ConfigError
from dml.samplers.basic import RandomSampler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_worker.rank_main, args=(2, ddp_worker.free_port(), str(out)), nprocs=2, join=True)
    return {rank: torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)}


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("method", list(ddp_worker.METHODS))
def test_two_ranks_equal_one_device(two_ranks, method, dtype):
    torch.set_num_threads(1)
    reference = ddp_worker.run_steps(method, dtype)
    steps = ddp_worker.STEPS if dtype == torch.float64 else 3 if method == "greedy_coreset" else 5
    for rank in (0, 1):
        got = two_ranks[rank][(method, dtype)]
        assert got["grads"].keys() == reference["grads"].keys() and any(k.startswith("model.") for k in got["grads"])
        for name, grad in reference["grads"].items():
            assert relative_gap(got["grads"][name], grad) < 1e-5, (method, rank, name)
        np.testing.assert_allclose(got["losses"][:steps], reference["losses"][:steps], rtol=1e-4, err_msg=method)
    if method in ("arcface", "proxyanchor"):
        assert any(name.startswith("loss.") for name in reference["grads"])  # the loss's own parameters were compared too


def test_rank_slices_make_the_global_batch():
    """Every rank draws the same global batches; the slices, concatenated in rank order, are the
    one-process batch with the same augmentation seeds."""
    labels = np.repeat(np.arange(10), 6)

    def batches(rank: int, world: int) -> list:
        epoch = EpochBatches(RandomSampler(labels, 12), rank, world)
        epoch.start(np.random.default_rng(5), 99)
        return list(epoch)

    whole = batches(0, 1)
    for world in (2, 3, 4):
        parts = [batches(rank, world) for rank in range(world)]
        assert [sum((p[step] for p in parts), []) for step in range(len(whole))] == whole


def test_indivisible_batch_is_one_line():
    with pytest.raises(ConfigError) as info:
        parse_params({"train": {"batch_size": 112}, "distributed": {"nproc_per_node": 3}})
    message = str(info.value)
    assert "train.batch_size: 112 is not divisible by the world size 3" in message and "\n" not in message


def test_spreading_the_run_changes_neither_model_record_nor_fingerprint():
    one, two = parse_params({}), parse_params({"distributed": {"nproc_per_node": 2}})
    assert one.weights_config() == two.weights_config() and one.run_config() == two.run_config()
    assert one.training_config() != two.training_config()  # but DVC reruns train when it changes
