"""Schema sections of training (``optim``, ``train``, ``monitor``, ``pretrain``): torch-free and
below the params schema (dml/config.py), like each family's own config module, so that the
schema is checked without importing torch and no module reaches up for them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dml.schema import Section


class OptimConfig(Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(4e-4, ge=0.0)


class TrainConfig(Section):
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(112, ge=4)
    seed: int = Field(0, ge=0)
    num_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision of the forward pass (cuda only)")
    track_test_recall: bool = Field(True, description="log test Recall@1 after every epoch (monitoring only, selects nothing)")
    selection: Literal["auto", "last", "val"] = Field(
        "auto", description="which epoch's weights are the model: val = best validation Recall@1 (needs data.val_classes > 0), "
        "last = the final epoch, auto = val when there is a validation split, else last"
    )
    spectrum_every: int = Field(2, ge=0, description="every N epochs, rho / pi_ratio / top singular values of training embeddings; 0 = off")
    spectrum_sample: int = Field(512, ge=16, description="training images (a fixed seeded sample) the spectrum is computed on")


class MonitorConfig(Section):
    """What training watches (train.track_test_recall): it shapes the train stage's curve, never
    the weights, so the saved model does not record it (:meth:`Params.weights_config`)."""

    queries: int = Field(
        1000, ge=0, description="test Recall@1 of a fixed seeded sample of this many test queries against every test image "
        "(an unbiased estimate of the full number; the evaluate stage computes it exactly); 0 = every test image"
    )
    every: int = Field(3, ge=1, description="monitor every N epochs (and after the last)")


class PretrainConfig(Section):
    """Stage pretrain: the backbone first learns to classify the disjoint ``source`` classes
    (``data.glyphs.source_fraction``, or a manifest's split ``source``); train then starts from those
    features with a fresh embedding head. The embedded analogue of the paper's ImageNet-pretrained
    backbones (fine-tune with a low ``optim.lr``). Reads ``model`` (the backbone), ``transforms``
    and ``train.device`` / ``train.amp`` / ``train.num_threads``; its own seed, so every training seed shares one
    pretrained network, as every seed of the paper shares the ImageNet weights."""

    epochs: int = Field(0, ge=0, description="0 = off: train starts from the backbone's own initialisation")
    batch_size: int = Field(112, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(4e-4, ge=0.0)
    seed: int = Field(0, ge=0)


class DistributedConfig(Section):
    """Data-parallel training over processes and machines (torch.distributed, DDP). One process
    is the plain path; more, and the train stage starts its workers through torch's own launcher
    (``torch.distributed.run``'s elastic agent). ``train.batch_size`` stays the *global* batch:
    every rank takes its slice, and mining and the loss see the whole gathered batch
    (dml/training/distributed.py). How the run is spread never shapes the weights' recipe: the
    saved model and the checkpoint's fingerprint leave this section out, so a run interrupted at
    one world size resumes at another with the same global batches."""

    nproc_per_node: int = Field(1, ge=1, description="training processes on this machine (one per GPU)")
    nnodes: int = Field(1, ge=1, description="machines taking part")
    node_rank: int = Field(0, ge=0, description="this machine's index, 0 .. nnodes-1 (0 writes every output)")
    master_addr: str = Field("127.0.0.1", min_length=1, description="address of node 0's rendezvous (loopback: one machine)")
    master_port: int = Field(29500, ge=1, le=65535)
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto = nccl on CUDA, gloo on CPU")
    sync_batchnorm: bool = Field(False, description="trainable BatchNorm over the global batch (SyncBatchNorm; CUDA only)")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes
