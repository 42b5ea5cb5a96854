"""Glyphs: a deterministic zero-shot image-retrieval benchmark rendered from fonts.

A *class* is a character shape; a *sample* is one rendering of one of the class's characters in
one of the TrueType fonts bundled with matplotlib, pushed through a random affine transform and
some photometric noise. Train and test splits have disjoint classes, so the test split measures
retrieval of *unseen* classes, as in the usual deep-metric-learning benchmarks.

Pipeline
--------
1. :func:`~dml.data.glyph_classes.discover_classes` renders every candidate character (Latin letters and digits, Greek,
   Cyrillic, ASCII symbols, Armenian, Georgian, arrows, mathematical operators, a few common
   symbols) in every font whose character map (fontTools ``getBestCmap``) holds it, keeps the
   characters with at least ``min_fonts`` usable (non-blank) fonts, and merges look-alikes with
   union-find (see ``dml/data/glyph_classes.py``): Latin ``A``, Greek ``Α`` and Cyrillic ``А`` form
   the class ``"AΑА"``, and ``X``/``x`` (the lowercase is a small uppercase) share a class,
   while ``b``/``d``, ``6``/``9``, ``A``/``Λ`` or ``O``/``Q`` stay apart. The decision comes
   from the renders, not from a hand-written list.
2. :func:`generate_glyphs` shuffles the classes (with a fixed split seed, so that every data seed
   sees the same class split), puts the first ``train_fraction`` of them in train and the rest in
   test, and draws ``samples_per_class`` augmented images per class. Each sample has its own
   generator seeded by ``(seed, class, sample)``: results do not depend on iteration order, a
   ``max_classes`` subset holds exactly the samples of the full set, and the same arguments always
   give byte-identical arrays (recorded as ``GlyphSet.sha256``).

The augmentation ranges of each difficulty preset are documented in one place:
:data:`~dml.data.glyph_augment.AUGMENTATIONS`. This module is step 2; the fonts, the classes and
the augmentation live in ``glyph_fonts``, ``glyph_classes`` and ``glyph_augment``.
"""

from __future__ import annotations

import hashlib
import numbers
import unicodedata
from dataclasses import dataclass

import numpy as np

from dml.data.glyph_augment import AUGMENTATIONS, DIFFICULTIES, sample_image
from dml.data.glyph_classes import check_int, discover_cached
from dml.data.glyph_fonts import RENDER_SIZE

__all__ = ["SPLIT_BY", "SPLIT_SEED", "GlyphSet", "generate_glyphs"]

# Seed of the class shuffle that decides the train / test split. Fixed (independent of the data
# seed), so that all data seeds share one class split and one label order.
SPLIT_SEED = 20_240_601


# --------------------------------------------------------------------------------------------
# Split and sample generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GlyphSet:
    images: np.ndarray  # uint8, shape (N, image_size, image_size)
    labels: np.ndarray  # int64, shape (N,), index into class_names
    class_names: list[str]
    is_train: np.ndarray  # bool, shape (N,), True for samples of train classes
    is_source: np.ndarray  # bool, shape (N,), True for the pretraining source classes (neither train nor test)
    sha256: str  # hash of images.tobytes() + labels.tobytes()

    @property
    def splits(self) -> list[str]:
        """Each sample's split: "source", "train" or "test"."""
        return ["source" if s else "train" if t else "test" for s, t in zip(self.is_source.tolist(), self.is_train.tolist())]


# How the classes are divided into train and test (``data.glyphs.split_by``):
#   random: the first train_fraction of the shuffled classes train, the rest test;
#   script: a real distribution shift: every class without a letter (arrows, mathematical
#           operators, punctuation, symbols, digits) trains, every class with a letter (Latin,
#           Greek, Cyrillic, Armenian, Georgian) tests.
SPLIT_BY: tuple[str, ...] = ("random", "script")


def is_letter_class(name: str) -> bool:
    """A class holds a letter when any of its merged characters is a Unicode letter (category L*):
    "0OoΟ..." and "2շ" are letter classes, "∏" alone or "→" are not."""
    return any(unicodedata.category(ch).startswith("L") for ch in name)


def generate_glyphs(seed: int = 0, samples_per_class: int = 40, image_size: int = 32,
                    difficulty: str = "hard", min_fonts: int = 8, train_fraction: float = 0.5,
                    max_classes: int | None = None, split_by: str = "random",
                    source_fraction: float = 0.0) -> GlyphSet:
    """Samples ordered by (shuffled class order, sample index); max_classes keeps the first
    max_classes classes after the shuffle (for tiny test configs).

    ``class_names`` follow the shuffled order (label ``k`` is ``class_names[k]``). The first
    ``round(source_fraction * n_classes)`` classes are the pretraining *source* set (held out of
    both train and test, drawn from every script); of the rest, ``split_by`` decides (see
    :data:`SPLIT_BY`): with ``random`` the first ``round(train_fraction * n)`` (at least one, at
    most all but one) are train. ``source_fraction=0`` and ``random`` give the original split.
    """
    check_int("seed", seed, 0)
    check_int("samples_per_class", samples_per_class, 2)
    check_int("image_size", image_size, 8)
    check_int("min_fonts", min_fonts, 1)
    if difficulty not in AUGMENTATIONS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) or not (
        0.0 < train_fraction < 1.0
    ):
        raise ValueError(f"train_fraction must be a number strictly between 0 and 1, got {train_fraction!r}")
    if max_classes is not None:
        check_int("max_classes", max_classes, 2)
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if isinstance(source_fraction, bool) or not isinstance(source_fraction, numbers.Real) or not (
        0.0 <= source_fraction < 1.0
    ):
        raise ValueError(f"source_fraction must be a number in [0, 1), got {source_fraction!r}")

    classes = discover_cached(min_fonts)
    if len(classes) < 2:
        raise ValueError(f"min_fonts={min_fonts} leaves {len(classes)} classes; at least 2 are needed")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(classes))
    if max_classes is not None:
        order = order[:max_classes]
    n_classes = len(order)
    n_source = round(source_fraction * n_classes)
    source, rest = order[:n_source], order[n_source:]
    if split_by == "random":
        n_train = min(max(round(train_fraction * len(rest)), 1), len(rest) - 1)
        train, test = rest[:n_train], rest[n_train:]
    else:
        letters = np.array([is_letter_class(classes[i].name) for i in rest.tolist()], dtype=bool)
        train, test = rest[~letters], rest[letters]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"split_by={split_by!r} with {n_classes} classes ({n_source} source) leaves "
                         f"{len(train)} train and {len(test)} test classes; both need at least one")
    # labels: source classes first, then train, then test (each in shuffled order)
    order = np.concatenate([source, train, test])

    aug = AUGMENTATIONS[difficulty]
    render_size = max(RENDER_SIZE, 2 * image_size)
    images = np.empty((n_classes * samples_per_class, image_size, image_size), dtype=np.uint8)
    for position, class_index in enumerate(order.tolist()):
        for k in range(samples_per_class):
            rng = np.random.default_rng([seed, class_index, k])
            images[position * samples_per_class + k] = sample_image(
                classes[class_index], rng, image_size, aug, render_size
            )
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), samples_per_class)
    is_source = labels < n_source
    is_train = ~is_source & (labels < n_source + len(train))
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return GlyphSet(
        images=images,
        labels=labels,
        class_names=[classes[i].name for i in order.tolist()],
        is_train=is_train,
        is_source=is_source,
        sha256=digest,
    )
