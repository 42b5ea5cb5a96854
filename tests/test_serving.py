"""The MLflow model of a trained model (dml/serving.py): logged through the tracking outbox,
registered, and loaded back offline with ``mlflow.pyfunc.load_model``, it gives the embed
stage's embeddings. Reference: :func:`dml.inference.embed_source`, what the embed stage runs."""

from __future__ import annotations

import numpy as np
import pytest

from dml.config import parse_params
from dml.data.loading import ArraySplit
from dml.data.stats import Stats
from dml.inference import embed_source
from dml.model_file import load_model, save_model
from dml.models import build_model

pytestmark = pytest.mark.integration


def test_registered_pyfunc_model_gives_the_embed_stage_embeddings(tmp_path, monkeypatch):
    import mlflow

    from dml.serving import save_mlflow_model
    from dml.tracking.runs import Tracker

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = parse_params({"model": {"embed_dim": 16}, "transforms": {"size": 24, "resize": 28},
                           "tracking": {"uri": uri, "experiment": "serving"}})
    stats = Stats([120.0], [60.0], 1, "x")
    model = build_model(params.model, 1, stats.mean, stats.std)
    save_model(tmp_path / "model.pt", model, params, stats)
    save_mlflow_model(tmp_path / "model.pt", tmp_path / "mlflow-model")

    tracker = Tracker(params, "result-serving")
    tracker.log_model(tmp_path / "mlflow-model", "embedding_model", "serving-embedding")
    tracker.set_status("FINISHED")
    assert tracker.sync()
    tracker.sync()  # nothing pending: still one version
    client = mlflow.MlflowClient(uri)
    versions = client.search_model_versions("name='serving-embedding'")
    assert [int(v.version) for v in versions] == [1] and versions[0].run_id == tracker.run_id

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 1, 30, 33), dtype=np.uint8)  # not the model's size: the eval geometry applies
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model("models:/serving-embedding/1")
    got = loaded.predict(images)
    split = ArraySplit(images, np.zeros(5, np.int64), np.arange(5))
    expected = embed_source(load_model(tmp_path / "model.pt"), split, params.transforms, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (5, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    signature = loaded.metadata.get_input_schema().inputs[0]
    assert signature.type == np.dtype(np.uint8) and signature.shape == (-1, 1, -1, -1)
