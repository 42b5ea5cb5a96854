"""The trained model as an MLflow model: ``mlflow.pyfunc.load_model(...).predict(images)`` gives
the embed stage's embeddings.

The pyfunc wraps ``models/model.pt`` (an artifact of the MLflow model) and applies what the
embed stage applies: the training-time eval geometry (``Resize`` + ``CenterCrop`` from the
transforms the model file records), then the network in eval mode. Input: a uint8 array of
decoded images, (N, C, H, W) with the model's channel count (1 = gray, 3 = RGB); output: float32
embeddings (N, D). The signature says so, with a two-image input example.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from unittest import mock

import mlflow.pyfunc
import mlflow.utils.environment
import numpy as np
import torch

from dml.data.transforms import eval_transform
from dml.model_file import load_trained

MODEL_ARTIFACT = "model"


class EmbeddingPyfunc(mlflow.pyfunc.PythonModel):
    """Images in, embeddings out, as the embed stage computes them."""

    def load_context(self, context) -> None:
        self.model, _, self.transforms = load_trained(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        images = torch.as_tensor(np.asarray(model_input, dtype=np.uint8))
        transform = eval_transform(self.transforms)
        with torch.no_grad():
            batch = torch.stack([transform(image) for image in images])
            return self.model(batch).float().numpy()


def save_mlflow_model(model_file: Path, out: Path) -> None:
    """An MLflow pyfunc model of ``model_file`` at ``out`` (replaced), with its signature and an
    input example; the environment is this project (no requirement inference: offline)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model, stats, transforms = load_trained(model_file)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, stats.channels, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.head.out_features))]))
    example = np.zeros((2, stats.channels, transforms.size, transforms.size), dtype=np.uint8)
    shutil.rmtree(out, ignore_errors=True)
    # MLflow checks the requirements against the installed packages by mapping every installed
    # module to its distribution (4 s here, per result); ours are this environment's own torch
    # and project, which cannot mismatch, so that warning-only check is skipped.
    with contextlib.ExitStack() as stack:
        if hasattr(mlflow.utils.environment, "warn_dependency_requirement_mismatches"):
            stack.enter_context(mock.patch.object(mlflow.utils.environment, "warn_dependency_requirement_mismatches", lambda requirements: None))
        mlflow.pyfunc.save_model(str(out), python_model=EmbeddingPyfunc(), artifacts={MODEL_ARTIFACT: str(model_file)},
                                 signature=signature, input_example=example,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "dml-pipeline"])
