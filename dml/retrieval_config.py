"""The sections of the stages that read embeddings: ``index``, ``eval``, ``spectrum`` and
``gallery``. Apart from ``dml/config.py`` so that the retrieval code (dml/indexing.py,
dml/evaluation.py) reads its knobs without reaching up to the whole schema; torch-free like
every schema module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dml.schema import Section


class IndexConfig(Section):
    """The retrieval gallery's FAISS index (see dml/indexing.py)."""

    type: Literal["flat", "ivf", "hnsw"] = Field("flat", description="flat = exact search; ivf / hnsw = approximate")
    metric: Literal["ip", "l2"] = Field(
        "l2", description="l2 | ip (cosine for L2-normalised embeddings, the same ranking); FAISS orders exact l2 ties by id"
    )
    nlist: int = Field(64, ge=1, description="ivf: number of k-means cells")
    nprobe: int = Field(8, ge=1, description="ivf: cells visited per query")
    hnsw_m: int = Field(32, ge=2, description="hnsw: graph links per node (FAISS's M)")
    ef_construction: int = Field(40, ge=1, description="hnsw: candidate list size while building")
    ef_search: int = Field(64, ge=1, description="hnsw: candidate list size per query (efSearch)")
    pq_m: int = Field(0, ge=0, description="ivf/hnsw: product-quantiser sub-vectors; 0 = store full vectors")
    pq_nbits: int = Field(8, ge=1, le=16, description="bits per product-quantiser code; 4 = SIMD fast-scan for ivf")
    refine_factor: int = Field(
        0, ge=0, description="with pq: re-rank k x refine_factor candidates by exact distance (keeps the full vectors too); 0 = off"
    )
    seed: int = Field(0, ge=0, description="seed of the ivf / pq k-means training")
    deterministic: bool = Field(True, description="hnsw: build on one thread so the graph is reproducible")

    @model_validator(mode="after")
    def _consistent(self) -> IndexConfig:
        if self.type == "flat" and self.pq_m:
            raise ValueError("index.pq_m: product quantisation needs type ivf or hnsw (flat is exact search)")
        if self.refine_factor and not self.pq_m:
            raise ValueError("index.refine_factor: re-ranking needs product-quantised codes (index.pq_m > 0)")
        if self.type == "ivf" and self.nprobe > self.nlist:
            raise ValueError(f"index.nprobe: {self.nprobe} exceeds index.nlist={self.nlist}")
        return self


class EvalConfig(Section):
    """What the evaluator computes (see dml/evaluation.py and the metric table in the README)."""

    recall_at: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1, description="Recall@k for each k")
    map_at: tuple[int, ...] = Field((1000,), description="mAP@K for each K (mAP@1000 in the paper)")
    clustering: bool = Field(True, description="k-means with k = number of classes, scored by NMI and F1")
    kmeans_seed: int = Field(0, ge=0)
    kmeans_iters: int = Field(20, ge=1)
    search: Literal["index", "exact"] = Field("index", description="neighbours from the built index or brute force")
    agreement_sample: int = Field(1000, ge=0, description="queries on which an approximate index is checked against exact search")
    block_size: int = Field(4096, ge=1, description="queries per search block (memory: block x k ids)")

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        for key in ("recall_at", "map_at"):
            if any(k < 1 for k in getattr(self, key)):
                raise ValueError(f"eval.{key}: every k must be >= 1")
        return self


class SpectrumConfig(Section):
    skip_largest: tuple[int, ...] = Field((0, 1), min_length=1, description="rho variants: drop the k largest values")
    split: Literal["train", "test"] = "test"

    @model_validator(mode="after")
    def _counts(self) -> SpectrumConfig:
        if any(k < 0 for k in self.skip_largest):  # a negative count would be a made-up rho variant
            raise ValueError(f"spectrum.skip_largest: counts of dropped values must be >= 0, got {list(self.skip_largest)}")
        return self


class GalleryConfig(Section):
    """The retrieval gallery figure (stage gallery, plots/gallery.png; see dml/gallery.py)."""

    queries: int = Field(10, ge=0, description="rows of fixed queries: a seeded sample of test ids, the same in every run")
    worst: int = Field(5, ge=0, description="then rows of the queries whose first correct neighbour ranks worst")
    k: int = Field(8, ge=1, le=50, description="retrieved images per row")
    seed: int = Field(0, description="seed of the fixed query sample")
    thumb_px: int = Field(64, ge=16, le=256, description="thumbnail side in pixels")
    search: Literal["index", "exact"] = Field("index", description="neighbours from the built index or brute force")

    @model_validator(mode="after")
    def _some_rows(self) -> GalleryConfig:
        if self.queries + self.worst == 0:
            raise ValueError("gallery.queries: queries and worst are both 0; the gallery would have no rows")
        return self
