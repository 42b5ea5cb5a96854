"""The training loop: learns on separable data, is bit-reproducible for a seed, and an
interrupted run resumed from its epoch checkpoint ends with exactly the uninterrupted weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dml.config import parse_params
from dml.data.loading import ArraySplit
from dml.data.stats import Stats
from dml.training.metric import build_training, train

STATS = Stats(mean=[127.5], std=[60.0], channels=1, sha256="synthetic")


def synthetic_split(classes: int = 12, per_class: int = 8, seed: int = 0) -> ArraySplit:
    """Each class is a random prototype image plus noise: a nearest-neighbour task a CNN solves."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (classes, 1, 16, 16))
    labels = np.repeat(np.arange(classes), per_class)
    images = np.clip(prototypes[labels] + rng.normal(0, 50, (len(labels), 1, 16, 16)), 0, 255).astype(np.uint8)
    return ArraySplit(images=images, labels=labels + 100, ids=np.arange(len(labels)))


def tiny_params(loss: str = "margin", loader: dict | None = None, **train):
    return parse_params(
        {
            "model": {"embed_dim": 16},
            "loss": {"name": loss},
            "sampler": {"class_balanced": {"samples_per_class": 4}},
            "train": {"epochs": 2, "batch_size": 32, "num_threads": 1, **train},
            "transforms": {"size": 16, "resize": 16},
            "loader": loader or {},
        }
    )


def state(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_same_seed_same_weights_and_curve():
    split = synthetic_split()
    first = train(tiny_params(), split, STATS, test_split=split, progress=False)
    second = train(tiny_params(), split, STATS, test_split=split, progress=False)
    for key, value in state(first).items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert [r.loss for r in first.curve] == [r.loss for r in second.curve]
    other = train(tiny_params(seed=1), split, STATS, progress=False)
    assert not torch.equal(first.model.head.weight, other.model.head.weight)


def test_learns_on_separable_data():
    split = synthetic_split()
    untrained = train(tiny_params(epochs=1, track_test_recall=False), split, STATS, test_split=split, progress=False)
    result = train(tiny_params(epochs=8), split, STATS, test_split=split, progress=False)
    assert result.curve[-1].test_recall_at_1 > 0.9
    assert result.curve[-1].loss < untrained.curve[0].loss


def interrupted_after_epoch_1_then_resumed(params, split, checkpoint):
    """Train with a checkpoint, interrupt after epoch 1 (KeyboardInterrupt, as Ctrl-C), then rerun:
    the rerun resumes and trains exactly the remaining epochs."""

    def interrupt_after_first_epoch(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(params, split, STATS, checkpoint=checkpoint, on_epoch=interrupt_after_first_epoch, progress=False)
    assert checkpoint.is_file()
    resumed_epochs = []
    resumed = train(params, split, STATS, checkpoint=checkpoint, on_epoch=lambda r: resumed_epochs.append(r.epoch), progress=False)
    assert resumed_epochs == list(range(2, params.train.epochs + 1))
    return resumed


# margin: per-class beta; proxynca / proxyanchor: proxies at their own lr; softmax / arcface /
# softtriple: class weights and centres; quadruplet: the loss's own random stream; lifted: an
# unnormalised model with a set miner; rho_distance: a miner with two random streams.
@pytest.mark.parametrize(
    ("loss", "miner"),
    [("margin", "rho_distance"), ("proxynca", "auto"), ("proxyanchor", "auto"), ("arcface", "auto"),
     ("softtriple", "auto"), ("quadruplet", "auto"), ("lifted", "auto")],
)
def test_interrupted_training_resumes_to_identical_weights(tmp_path, loss, miner):
    """Reference: the uninterrupted run: resumed after epoch 1 of 3, the model, the loss's own
    parameters (beta, proxies, class weights, centres) and the curve are bit-identical."""
    split = synthetic_split()
    raw = tiny_params(loss, epochs=3).model_dump()
    raw["miner"]["name"] = miner
    raw["model"]["normalize"] = "auto"
    params = parse_params(raw)
    reference = train(params, split, STATS, progress=False)

    checkpoint = tmp_path / "train.pt"
    resumed = interrupted_after_epoch_1_then_resumed(params, split, checkpoint)
    for key, value in state(reference).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    own = reference.criterion.state_dict()
    assert own.keys() == resumed.criterion.state_dict().keys()
    for key, value in own.items():
        assert torch.equal(value, resumed.criterion.state_dict()[key]), key
    assert [r.loss for r in reference.curve] == [r.loss for r in resumed.curve]


# greedy_coreset: storage refreshed at epoch 2, after the resume; d2_coreset: the sampler's torch
# stream; frd: batch matching. Each run fills the storage before epoch 1 and updates it per batch.
@pytest.mark.parametrize(("sampler", "knobs"), [("greedy_coreset", {"refresh_every": 2}), ("d2_coreset", {}), ("frd", {})])
def test_interrupted_training_with_embedded_sampler_resumes_to_identical_weights(tmp_path, sampler, knobs):
    """Reference: the uninterrupted run: resumed after epoch 1 of 3 from the checkpoint (which
    holds the embedding storage), the weights, the storage and the curve are bit-identical."""
    split = synthetic_split()
    raw = tiny_params(epochs=3).model_dump()
    raw["sampler"] = {"name": sampler, sampler: {"samples_per_class": 4, "pool_size": 48, **knobs}}
    raw["model"]["normalize"] = "auto"
    params = parse_params(raw)
    uninterrupted = tmp_path / "reference.pt"
    reference = train(params, split, STATS, checkpoint=uninterrupted, progress=False)
    checkpoint = tmp_path / "train.pt"
    resumed = interrupted_after_epoch_1_then_resumed(params, split, checkpoint)
    for key, value in state(reference).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [r.loss for r in reference.curve] == [r.loss for r in resumed.curve]
    final = torch.load(checkpoint, weights_only=True)["storage"]["embeddings"]
    assert torch.equal(final, torch.load(uninterrupted, weights_only=True)["storage"]["embeddings"])


def test_only_embedded_samplers_build_a_storage():
    """Reference: the sampler's knobs: a label-only sampler gets no storage (no extra embedding
    pass); an embedded one gets an N x embed_dim storage on the model's device."""
    split = synthetic_split()
    assert build_training(tiny_params(), split, STATS).storage is None
    raw = tiny_params().model_dump()
    raw["sampler"]["name"] = "ddm"
    raw["sampler"]["ddm"] = {"samples_per_class": 4, "pool_size": 48}
    raw["model"]["normalize"] = "auto"
    setup = build_training(parse_params(raw), split, STATS)
    assert setup.storage.embeddings.shape == (len(split), 16) and setup.sampler.storage is setup.storage


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    split = synthetic_split()
    checkpoint = tmp_path / "train.pt"
    train(tiny_params(epochs=1), split, STATS, checkpoint=checkpoint, progress=False)
    epochs = []
    train(tiny_params(epochs=1, seed=5), split, STATS, checkpoint=checkpoint, on_epoch=lambda r: epochs.append(r.epoch), progress=False)
    assert epochs == [1]


def test_shift_transform_is_a_translation():
    """Reference: edge-padding by hand: every augmented image equals the edge-padded input cropped
    at an offset within +-shift, all 9 offsets occur over 200 seeds, and shift 0 is the identity."""
    from dml.data.config import TransformsConfig
    from dml.data.loading import ArraySplit, ImageDataset, train_transform

    image = torch.arange(64, dtype=torch.uint8).view(1, 8, 8)
    padded = torch.nn.functional.pad(image[None].float(), (1, 1, 1, 1), mode="replicate")[0].to(torch.uint8)
    crops = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    dataset = ImageDataset(ArraySplit(image[None].numpy(), np.zeros(1), np.zeros(1)), train_transform(TransformsConfig(size=8, resize=8, shift=1)))
    seen = set()
    for seed in range(200):
        out, index = dataset[(0, seed)]
        seen.add(next(i for i, crop in enumerate(crops) if torch.equal(out, crop)))
        assert index == 0 and torch.equal(out, dataset[(0, seed)][0])  # a function of the seed
    assert seen == set(range(9))
    still = ImageDataset(ArraySplit(image[None].numpy(), np.zeros(1), np.zeros(1)), train_transform(TransformsConfig(size=8, resize=8, shift=0)))
    assert torch.equal(still[(0, 3)][0], image)



@pytest.mark.parametrize("shift, resize", [(2, 12), (1, 10), (0, 10)])
def test_batched_shift_equals_torchvision_random_crop_image_by_image(shift, resize):
    """Reference: torchvision's own ``Compose([Resize, CenterCrop, RandomCrop(padding=shift,
    padding_mode="edge")])`` applied image by image after seeding torch's generator with each
    image's seed: the batch fetch of the training loader gives the same pixels for every image
    (random images larger than the crop, so the eval geometry resizes too)."""
    from torchvision.transforms import v2

    from dml.data.config import TransformsConfig
    from dml.data.loading import ArraySplit, ImageDataset, train_transform

    cfg = TransformsConfig(size=10, resize=resize, shift=shift)
    images = np.random.default_rng(0).integers(0, 256, size=(6, 1, 12, 14), dtype=np.uint8)
    dataset = ImageDataset(ArraySplit(images, np.zeros(6), np.arange(6)), train_transform(cfg))
    reference = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(10), v2.RandomCrop(10, padding=shift, padding_mode="edge")])
    keys = [(i, 1000 + 7 * i) for i in range(6)] + [(2, 5), (2, 5)]
    batch = dataset.__getitems__(keys)
    for (index, seed), (image, position) in zip(keys, batch):
        torch.default_generator.manual_seed(seed)
        assert position == index and torch.equal(image, reference(torch.from_numpy(images[index])))

def test_same_training_with_any_number_of_workers():
    """Reference: the in-process run (0 workers): with 2 worker processes the batches and each
    image's augmentation are the same, so the weights are bit-identical."""
    split = synthetic_split()
    inline = train(tiny_params(epochs=1), split, STATS, progress=False)
    workers = train(tiny_params(epochs=1, loader={"num_workers": 2}), split, STATS, progress=False)
    for key, value in state(inline).items():
        assert torch.equal(value, workers.model.state_dict()[key]), key


def test_embedded_sampler_with_workers_matches_in_process_at_the_same_delay():
    """Reference: the in-process run with the same delay: a loader with 1 worker prefetching 2
    batches asks for batches ahead of training, and the storage's delay makes the sampler see the
    same embeddings anyway; a delay below the prefetch is a params error."""
    sampler = {"name": "greedy_coreset", "greedy_coreset": {"samples_per_class": 4, "pool_size": 16, "delay": 2}}
    split = synthetic_split()

    def params(workers: int):
        raw = tiny_params(epochs=1, loader={"num_workers": workers}).model_dump(mode="json")
        return parse_params({**raw, "sampler": {**raw["sampler"], **sampler}})

    inline = train(params(0), split, STATS, progress=False)
    workers = train(params(1), split, STATS, progress=False)
    for key, value in state(inline).items():
        assert torch.equal(value, workers.model.state_dict()[key]), key
    with pytest.raises(ValueError, match="sampler.greedy_coreset.delay: 2 is below the 4 batches"):
        raw = params(0).model_dump(mode="json")
        parse_params({**raw, "loader": {"num_workers": 2}})


def test_spectrum_over_training_on_a_fixed_sample():
    """Reference: spectral_decay / embedding_density / numpy SVD of the final model's embeddings of
    the same fixed sample: with spectrum_every 2 over 3 epochs, epochs 2 and 3 (the last) carry
    the embedding space, epoch 1 none; the sample is the same for every run of the same seed."""
    from dml.inference import embed_source
    from dml.metrics.embedding_space import embedding_density, spectral_decay
    from dml.training.monitoring import spectrum_sample

    split = synthetic_split()
    params = tiny_params(epochs=3, spectrum_every=2, spectrum_sample=40)
    result = train(params, split, STATS, progress=False)
    assert [r.train_rho is not None for r in result.curve] == [False, True, True]
    sample = spectrum_sample(split.labels, 40, seed=0)
    assert np.array_equal(sample, spectrum_sample(split.labels, 40, seed=0)) and len(np.unique(sample)) == 40
    vectors = embed_source(result.model, split.subset(sample), params.transforms)
    s = np.linalg.svd(vectors.astype(np.float64), compute_uv=False)
    last = result.curve[-1]
    assert last.train_rho == pytest.approx(spectral_decay(vectors, 0), rel=1e-6)
    assert last.train_rho_skip1 == pytest.approx(spectral_decay(vectors, 1), rel=1e-6)
    assert last.train_pi_ratio == pytest.approx(embedding_density(vectors, split.labels[sample])["pi_ratio"], rel=1e-6)
    assert [last.train_sv1, last.train_sv2, last.train_sv3] == pytest.approx(list(s[:3] / s.sum()), rel=1e-6)


def test_non_finite_loss_stops_training_at_that_step(tmp_path, monkeypatch):
    """Reference: the divergence contract: a loss that becomes NaN at the 2nd batch of epoch 2
    stops training there with one line naming epoch and batch, before the optimiser step; the
    checkpoint of epoch 1 is left as it was."""
    import dml.training.metric as training
    from dml.errors import TrainingError

    original = training.build_loss
    calls = {"n": 0}

    def nan_on_call(section, num_classes, embed_dim):
        loss = original(section, num_classes, embed_dim)
        forward = loss.forward

        def poisoned(embeddings, labels, tuples):
            calls["n"] += 1
            value = forward(embeddings, labels, tuples)
            return value * float("nan") if calls["n"] == batches_per_epoch + 2 else value

        loss.forward = poisoned
        return loss

    split = synthetic_split()
    params = tiny_params(epochs=3)
    batches_per_epoch = len(split) // params.train.batch_size
    monkeypatch.setattr(training, "build_loss", nan_on_call)
    checkpoint = tmp_path / "train.pt"
    epochs = []
    with pytest.raises(TrainingError, match=r"^training diverged: loss nan at epoch 2, batch 2 \(loss.name=margin"):
        train(params, split, STATS, checkpoint=checkpoint, on_epoch=lambda r: epochs.append(r.epoch), progress=False)
    assert epochs == [1]
    assert len(torch.load(checkpoint, weights_only=True)["curve"]) == 1


def test_an_epoch_without_any_tuple_stops_training():
    """Reference: by construction: every training class has one image, so no batch holds a
    positive pair and the miner finds nothing; training stops with one line instead of
    'learning' from zero tuples and exiting 0."""
    from dml.errors import TrainingError

    split = synthetic_split(classes=64, per_class=1)
    raw = tiny_params(epochs=1).model_dump()
    raw["sampler"]["name"] = "random"
    raw["model"]["normalize"] = "auto"
    with pytest.raises(TrainingError, match=r"^epoch 1: miner.name='distance' found no tuple in any batch"):
        train(parse_params(raw), split, STATS, progress=False)


def test_model_is_the_best_validation_epoch_and_survives_a_resume(tmp_path):
    """Reference: the curve's own validation Recall@1: with a validation split the model is the
    epoch of the highest val R@1 (the earliest on ties), re-embedding the validation split with
    it gives that R@1 again, and a run resumed after epoch 1 selects the same epoch and weights.
    Without a validation split the model is the last epoch; asking for val without one is an error."""
    from dml.training.monitoring import quick_recall_at_1

    split, val = synthetic_split(), synthetic_split(classes=6, per_class=6, seed=1)
    params = tiny_params(epochs=4)
    result = train(params, split, STATS, val_split=val, progress=False)
    scores = [r.val_recall_at_1 for r in result.curve]
    assert result.selection == "val" and result.selected_epoch == 1 + int(np.argmax(scores))
    assert quick_recall_at_1(result.model, val, params) == scores[result.selected_epoch - 1]

    def interrupt(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "train.pt"
    with pytest.raises(KeyboardInterrupt):
        train(params, split, STATS, val_split=val, checkpoint=checkpoint, on_epoch=interrupt, progress=False)
    resumed = train(params, split, STATS, val_split=val, checkpoint=checkpoint, progress=False)
    assert resumed.selected_epoch == result.selected_epoch
    for key, value in state(result).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    last = train(tiny_params(epochs=2), split, STATS, progress=False)
    assert (last.selection, last.selected_epoch) == ("last", 2)
    with pytest.raises(ValueError, match="train.selection: val"):
        train(tiny_params(epochs=1, selection="val"), split, STATS, progress=False)


def test_in_memory_split_and_eval_fast_path_change_no_number(tmp_path):
    """Reference: the streamed file split and the full Resize + CenterCrop: a split decoded into
    memory yields the same tensors, the eval geometry's pass-through of size x size images equals
    what the two transforms return, and images of other sizes still go through them; a split of
    mixed sizes, or over the limit, keeps streaming."""
    from PIL import Image
    from torchvision.transforms import v2

    from dml.data.config import TransformsConfig
    from dml.data.loading import ArraySplit, FileSplit, eval_transform, in_memory

    rng = np.random.default_rng(0)
    names = []
    for i, size in enumerate([(16, 16), (16, 16), (16, 16)]):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        names.append(f"{i}.png".encode())
    files = FileSplit(tmp_path, np.array(names, dtype=np.bytes_), np.arange(3), np.arange(3), 1)
    memory = in_memory(files, 1)
    assert isinstance(memory, ArraySplit)
    assert all(torch.equal(memory.read(i), files.read(i)) for i in range(3))
    assert in_memory(files, 0) is files
    Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8)).save(tmp_path / "3.png")
    mixed = FileSplit(tmp_path, np.array([*names, b"3.png"], dtype=np.bytes_), np.arange(4), np.arange(4), 1)
    assert in_memory(mixed, 1) is mixed

    cfg = TransformsConfig(size=16, resize=16)
    full = v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16)])
    for image in (files.read(0), mixed.read(3)):
        assert torch.equal(eval_transform(cfg)(image), full(image))
