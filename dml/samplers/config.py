"""Per-sampler knobs: one small typed model per ``sampler.name`` (``params.yaml``:
``sampler.<name>.<knob>``). Defaults are the paper code's (``--samples_per_class 2``,
``--data_batchmatch_bigbs 512``, ``--data_batchmatch_ncomps 10``, ``--data_d2_coreset_lambda 1``).

Knobs derived from ``EmbeddedSamplerKnobs`` mark the samplers that read the embedding storage
(``dml/samplers/storage.py``): only for those does training pay for the extra embedding pass.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dml.schema import MethodChoice, Section


class SamplerKnobs(Section):
    pass


class RandomSamplerKnobs(SamplerKnobs):
    """Uniformly shuffled batches, no class structure."""


class ClassBalancedKnobs(SamplerKnobs):
    """SPC-n: batch_size / n distinct classes with n images each, drawn without replacement."""

    samples_per_class: int = Field(4, ge=2, description="n: images per class in a batch")


class ClassRandomKnobs(SamplerKnobs):
    """The paper code's SPC-n: batch_size / n class draws and n images per draw, both with replacement."""

    samples_per_class: int = Field(2, ge=2, description="n: images per class draw")


class FullRandomKnobs(SamplerKnobs):
    """batch_size - 1 images of uniformly drawn classes plus one more image of a class already in
    the batch (the seed's SPC-R): every batch has a positive pair, nothing more is enforced."""


class EmbeddedSamplerKnobs(SamplerKnobs):
    """Samplers that choose batches from the current embeddings of the training set (the
    embedding storage). Batches hold whole class groups of n images, so tuple losses find positives."""

    samples_per_class: int = Field(2, ge=2, description="n: images per class group in a batch")
    pool_size: int = Field(
        512, ge=2, description="coresets: random storage rows picked from; ddm / frd: images in the reference batch"
    )
    update_storage: bool = Field(True, description="overwrite the storage rows of each batch with its training embeddings")
    refresh_every: int = Field(0, ge=0, description="re-embed the whole training set every k epochs; 0 = only before epoch 1")
    delay: int = Field(
        0, ge=0, description="batch t is chosen from the storage as updated by batches before t - delay; must cover the "
        "batches a DataLoader with workers chooses ahead (the paper code's 8 workers x 2: 16)"
    )


class GreedyCoresetKnobs(EmbeddedSamplerKnobs):
    """k-center greedy on a random pool: each pick is the pool point farthest from the picks so
    far; each pick comes with n - 1 other images of its class."""


class D2CoresetKnobs(EmbeddedSamplerKnobs):
    """D2 sampling on a random pool, weighted by a Gaussian fit of the pool."""

    distance_exponent: float = Field(
        1.0, ge=0.0, description="lambda: p(x) ~ N(x; mu, Sigma) * (sum of squared distances to the picks)^lambda"
    )


class BatchMatchKnobs(EmbeddedSamplerKnobs):
    """Of ``candidates`` SPC batches drawn from an SPC reference batch of ``pool_size`` images,
    the one whose embedding distribution is closest to the reference's."""

    candidates: int = Field(10, ge=1, description="candidate batches compared per training batch")


class DDMKnobs(BatchMatchKnobs):
    """Distance-distribution matching: mean, std and the pairwise-distance histogram."""

    bins: int = Field(50, ge=2, description="histogram bins over the reference batch's distance range")
    wasserstein_weight: float = Field(
        150.0, ge=0.0, description="weight of W1 between the histograms (the paper code: 75 x (W(a,b) + W(b,a)))"
    )


class FRDKnobs(BatchMatchKnobs):
    """Frechet distance between Gaussian fits (mean and full covariance) of the embeddings."""


SamplerName = Literal["random", "class_balanced", "class_random", "full_random", "greedy_coreset", "d2_coreset", "ddm", "frd"]


class SamplerSection(MethodChoice):
    name: SamplerName = "class_balanced"
    random: RandomSamplerKnobs = RandomSamplerKnobs()
    class_balanced: ClassBalancedKnobs = ClassBalancedKnobs()
    class_random: ClassRandomKnobs = ClassRandomKnobs()
    full_random: FullRandomKnobs = FullRandomKnobs()
    greedy_coreset: GreedyCoresetKnobs = GreedyCoresetKnobs()
    d2_coreset: D2CoresetKnobs = D2CoresetKnobs()
    ddm: DDMKnobs = DDMKnobs()
    frd: FRDKnobs = FRDKnobs()
