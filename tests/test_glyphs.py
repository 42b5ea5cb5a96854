"""Tests of the glyph benchmark generator (dml/data/glyphs.py).

Class discovery runs once per process (cached, a few seconds); every generated set is tiny
(``max_classes``), so the whole file runs in well under 20 s.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dml.data.glyph_augment import AUGMENTATIONS, DIFFICULTIES
from dml.data.glyph_classes import GlyphClass, discover_classes
from dml.data.glyphs import GlyphSet, generate_glyphs

SMALL = dict(samples_per_class=6, max_classes=12)


@pytest.fixture(scope="module")
def classes() -> list[GlyphClass]:
    return discover_classes()


@pytest.fixture(scope="module")
def class_of(classes) -> dict[str, str]:
    """character -> name of its class"""
    return {ch: c.name for c in classes for ch in c.name}


@pytest.fixture(scope="module")
def small() -> GlyphSet:
    return generate_glyphs(seed=0, **SMALL)


@pytest.fixture(scope="module")
def full() -> GlyphSet:
    """All classes, 2 samples each."""
    return generate_glyphs(seed=0, samples_per_class=2)


# ---------------------------------------------------------------- class discovery


def test_discover_is_sorted_deterministic_and_sized(classes):
    names = [c.name for c in classes]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert [c.name for c in discover_classes()] == names
    assert 400 <= len(classes) <= 700  # ~550 with the default candidates and fonts
    chars = "".join(names)
    assert len(set(chars)) == len(chars)  # each character in exactly one class


@pytest.mark.parametrize("group", ["AΑА", "Xx", "XΧХ", "xх", "Oo", "Ss", "oοо", "BΒВ", "EΕЕ"])
def test_lookalikes_share_a_class(class_of, group):
    assert len({class_of[ch] for ch in group}) == 1, {ch: class_of[ch] for ch in group}


@pytest.mark.parametrize(
    "pair", ["bd", "pq", "69", "AΛ", "OQ", "nu", "MW", "EF", "<>", "()", "←→", "∪∩"]
)
def test_distinct_shapes_stay_apart(class_of, pair):
    a, b = pair
    assert class_of[a] != class_of[b]


def test_variants_use_valid_fonts(classes):
    from dml.data.glyph_fonts import _cmap  # the fonts' character maps

    for c in classes:
        fonts = {stem for _, stem in c.variants}
        assert len(fonts) >= 8, c
        assert len(set(c.variants)) == len(c.variants)
        assert {ch for ch, _ in c.variants} == set(c.name)
        for ch, stem in c.variants:
            assert ord(ch) in _cmap(stem)
            assert not stem.startswith(("LastResort", "STIXNonUni", "STIXSiz", "cmsy", "cmex"))
            assert "Display" not in stem
            if stem.startswith("cm"):  # Computer Modern: ASCII letters / digits only
                assert ch.isascii() and ch.isalnum(), (ch, stem)
                if stem == "cmmi10":  # old-style digits
                    assert ch.isalpha()


def test_fonts_per_class_range(classes):
    counts = [len({stem for _, stem in c.variants}) for c in classes]
    assert min(counts) >= 8
    assert max(counts) == 22  # ASCII letters: 12 DejaVu + 4 STIX + 6 Computer Modern
    a_class = next(c for c in classes if "A" in c.name)
    assert len({stem for _, stem in a_class.variants}) == 22


# ---------------------------------------------------------------- generated sets


def test_shapes_dtypes_and_order(small):
    n = 12 * 6
    assert small.images.shape == (n, 32, 32) and small.images.dtype == np.uint8
    assert small.labels.shape == (n,) and small.labels.dtype == np.int64
    assert small.is_train.shape == (n,) and small.is_train.dtype == np.bool_
    assert len(small.class_names) == 12 and len(set(small.class_names)) == 12
    np.testing.assert_array_equal(small.labels, np.repeat(np.arange(12), 6))
    expected = hashlib.sha256(small.images.tobytes() + small.labels.tobytes()).hexdigest()
    assert small.sha256 == expected


def test_same_arguments_give_identical_bytes(small):
    again = generate_glyphs(seed=0, **SMALL)
    np.testing.assert_array_equal(again.images, small.images)
    np.testing.assert_array_equal(again.labels, small.labels)
    np.testing.assert_array_equal(again.is_train, small.is_train)
    assert again.class_names == small.class_names
    assert again.sha256 == small.sha256


def test_other_seed_changes_samples_not_split(small):
    other = generate_glyphs(seed=1, **SMALL)
    assert other.sha256 != small.sha256
    assert np.mean(other.images != small.images) > 0.5
    # The class split is fixed: every data seed sees the same classes in the same order.
    assert other.class_names == small.class_names
    np.testing.assert_array_equal(other.is_train, small.is_train)


def test_difficulty_changes_samples(small):
    easy = generate_glyphs(seed=0, difficulty="easy", **SMALL)
    assert easy.class_names == small.class_names
    assert easy.sha256 != small.sha256


def test_samples_do_not_depend_on_set_size(small):
    """Each sample is seeded by (seed, class, sample index) alone."""
    fewer_classes = generate_glyphs(seed=0, samples_per_class=6, max_classes=5)
    np.testing.assert_array_equal(fewer_classes.images, small.images[: 5 * 6])
    assert fewer_classes.class_names == small.class_names[:5]
    fewer_samples = generate_glyphs(seed=0, samples_per_class=3, max_classes=12)
    per_class = small.images.reshape(12, 6, 32, 32)[:, :3].reshape(-1, 32, 32)
    np.testing.assert_array_equal(fewer_samples.images, per_class)


def test_max_classes_is_a_prefix_of_the_shuffle(classes, small, full):
    names = {c.name for c in classes}
    assert set(small.class_names) <= names
    assert len(full.class_names) == len(classes)
    assert sorted(full.class_names) == sorted(names)
    assert full.class_names[:12] == small.class_names
    assert full.class_names != sorted(full.class_names)  # shuffled


@pytest.mark.parametrize("fraction, n_train", [(0.5, 6), (0.25, 3), (0.75, 9), (0.01, 1), (0.99, 11)])
def test_train_test_split(fraction, n_train):
    gs = generate_glyphs(seed=0, samples_per_class=2, max_classes=12, train_fraction=fraction)
    train = set(gs.labels[gs.is_train].tolist())
    test = set(gs.labels[~gs.is_train].tolist())
    assert train.isdisjoint(test)
    assert train | test == set(range(12))
    assert train == set(range(n_train))  # the first classes of the shuffled order
    assert gs.is_train.sum() == n_train * 2


def test_full_split_is_half_and_half(classes, full):
    train = set(full.labels[full.is_train].tolist())
    assert len(train) == round(0.5 * len(classes))
    assert train.isdisjoint(full.labels[~full.is_train].tolist())


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_every_image_shows_a_glyph(difficulty):
    gs = generate_glyphs(seed=3, samples_per_class=8, max_classes=40, difficulty=difficulty)
    images = gs.images.astype(np.float64)
    assert images.reshape(len(images), -1).std(axis=1).min() > 8
    # Averaging 4x4 blocks divides the pixel noise (std <= 24) by 4: a blank image would stay
    # below ~6 there; an image with a glyph of contrast >= 60 varies much more.
    pooled = images.reshape(len(images), 8, 4, 8, 4).mean(axis=(2, 4))
    assert pooled.reshape(len(images), -1).std(axis=1).min() > 10
    # ink and background differ by at least the preset's minimum contrast (60 or 120)
    assert np.all(images.max(axis=(1, 2)) - images.min(axis=(1, 2)) > 60)


def test_image_size_is_respected():
    gs = generate_glyphs(seed=0, samples_per_class=2, max_classes=4, image_size=20)
    assert gs.images.shape == (8, 20, 20)


def test_samples_look_like_their_class():
    """On the easy preset, raw-pixel nearest neighbours mostly find the same class."""
    gs = generate_glyphs(seed=0, samples_per_class=10, max_classes=15, difficulty="easy")
    x = gs.images.reshape(len(gs.images), -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)  # remove the background level and the ink polarity sign
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = np.abs(x @ x.T)
    np.fill_diagonal(sim, -np.inf)
    recall_at_1 = np.mean(gs.labels[sim.argmax(axis=1)] == gs.labels)
    assert recall_at_1 > 0.5  # chance: 1/15


def test_presets_are_documented_and_ordered():
    assert DIFFICULTIES == ("easy", "hard")
    easy, hard = AUGMENTATIONS["easy"], AUGMENTATIONS["hard"]
    assert hard.rotation_deg == 18.0 and easy.rotation_deg < hard.rotation_deg
    assert easy.noise_std[1] < hard.noise_std[1] and easy.blur_p < hard.blur_p


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(difficulty="medium"), "difficulty"),
        (dict(samples_per_class=1), "samples_per_class"),
        (dict(samples_per_class=2.5), "samples_per_class"),
        (dict(image_size=4), "image_size"),
        (dict(seed=-1), "seed"),
        (dict(min_fonts=0), "min_fonts"),
        (dict(train_fraction=0.0), "train_fraction"),
        (dict(train_fraction=1.0), "train_fraction"),
        (dict(max_classes=1), "max_classes"),
        (dict(min_fonts=1000), "min_fonts"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        generate_glyphs(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_difficulty_lists_the_choices():
    with pytest.raises(ValueError, match="'easy'.*'hard'"):
        generate_glyphs(difficulty="medium")


def test_discover_rejects_bad_min_fonts():
    with pytest.raises(ValueError, match="min_fonts"):
        discover_classes(min_fonts=0)


# ---------------------------------------------------------------- shifted split and source classes


def test_script_split_trains_on_symbols_and_tests_on_letters(full):
    """Reference: Unicode general categories (unicodedata), one class at a time."""
    import unicodedata

    gs = generate_glyphs(seed=0, samples_per_class=2, split_by="script")
    names = np.array(gs.class_names)
    train, test = set(gs.labels[gs.is_train].tolist()), set(gs.labels[~gs.is_train].tolist())
    assert train.isdisjoint(test) and len(train | test) == len(full.class_names)
    has_letter = [any(unicodedata.category(ch).startswith("L") for ch in name) for name in names]
    assert all(has_letter[k] for k in test) and not any(has_letter[k] for k in train)
    assert {"→", "∀"} <= {ch for k in train for ch in names[k]}
    assert {"Ж", "ა", "λ"} <= {ch for k in test for ch in names[k]}
    assert sorted(names) == sorted(full.class_names)  # the same classes, split differently


def test_source_classes_are_held_out_of_train_and_test(full):
    n = len(full.class_names)
    gs = generate_glyphs(seed=0, samples_per_class=2, source_fraction=0.25)
    source = set(gs.labels[gs.is_source].tolist())
    train = set(gs.labels[gs.is_train].tolist())
    test = set(gs.labels[~gs.is_train & ~gs.is_source].tolist())
    assert len(source) == round(0.25 * n)
    assert source.isdisjoint(train) and source.isdisjoint(test) and train.isdisjoint(test)
    assert len(train) == round(0.5 * (n - len(source)))  # train_fraction of what is left
    # the source is the head of the shuffle, the same classes under either split
    assert [gs.class_names[k] for k in sorted(source)] == full.class_names[: len(source)]
    shifted = generate_glyphs(seed=0, samples_per_class=2, source_fraction=0.25, split_by="script")
    assert {shifted.class_names[k] for k in set(shifted.labels[shifted.is_source].tolist())} == {gs.class_names[k] for k in source}
    assert gs.splits.count("source") == 2 * len(source)


def test_no_source_and_random_split_is_the_original_set(small):
    again = generate_glyphs(seed=0, **SMALL, source_fraction=0.0, split_by="random")
    assert again.sha256 == small.sha256 and np.array_equal(again.is_train, small.is_train)
    assert set(again.splits) == {"train", "test"}


def test_bad_split_arguments_raise():
    with pytest.raises(ValueError, match="split_by"):
        generate_glyphs(samples_per_class=2, max_classes=12, split_by="alphabet")
    with pytest.raises(ValueError, match="source_fraction"):
        generate_glyphs(samples_per_class=2, max_classes=12, source_fraction=1.0)
