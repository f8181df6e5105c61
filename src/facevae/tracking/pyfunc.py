"""The trained VAE as an MLflow pyfunc: aligned face crops in, the actor's reconstructions out.

Input: uint8 (N, S, S, 3) RGB crops (S = model.image_size), as a numpy array or as a DataFrame
whose one column holds (S, S, 3) arrays. The tensor signature is enforced by MLflow before
predict: other dtypes or a single unbatched crop are rejected. Over HTTP (`mlflow models serve`)
send {"inputs": [[[[r, g, b], ...]]]}; the server builds the uint8 array from the signature.
Output: uint8 (N, S, S, 3).

The model's only artifact is model.pt (weights + model config); the network is rebuilt from
facevae.model.vae, which is shipped with the model (code_paths) so that loading needs no install.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from facevae.model.files import load_model
from facevae.model.vae import reconstruct_faces

MODEL_ARTIFACT = "model"

# What loading needs of this package; copied next to the model instead of the whole package.
CODE_MODULES = (
    "__init__.py", "core/__init__.py", "core/errors.py", "core/atomic.py", "core/catalog.py", "core/config.py",
    "model/__init__.py", "model/vae.py", "model/files.py", "tracking/__init__.py", "tracking/pyfunc.py",
)

PREDICT_BATCH = 256


class FaceVAEPyfunc(mlflow.pyfunc.PythonModel):
    """Reconstruct faces as the actor: decode(mu(encode(face)))."""

    def load_context(self, context) -> None:

        self.model = load_model(context.artifacts[MODEL_ARTIFACT])
        self.image_size = self.model.cfg.image_size

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        faces = as_face_batch(model_input, self.image_size)
        return reconstruct_uint8(self.model, faces)


def as_face_batch(model_input: Any, image_size: int) -> np.ndarray:
    """Whatever pyfunc hands us -> uint8 (N, S, S, 3)."""
    if hasattr(model_input, "columns"):  # pandas DataFrame: one column of crops
        column = model_input[model_input.columns[0]]
        model_input = np.stack([np.asarray(cell) for cell in column]) if len(column) else np.empty((0,))
    faces = np.asarray(model_input)
    if faces.ndim == 3:
        faces = faces[None]
    shape = (image_size, image_size, 3)
    if faces.size == 0:
        return np.empty((0, *shape), dtype=np.uint8)
    if faces.shape[1:] != shape:
        if faces.ndim == 2 and faces.shape[1] == np.prod(shape):
            faces = faces.reshape(-1, *shape)
        else:
            raise ValueError(f"expected uint8 face crops of shape (N, {image_size}, {image_size}, 3), got {faces.shape}")
    if faces.dtype != np.uint8:
        faces = np.clip(np.rint(faces), 0, 255).astype(np.uint8)
    return faces


def reconstruct_uint8(model, faces: np.ndarray) -> np.ndarray:
    """uint8 NHWC in, uint8 NHWC out, in batches; the model is used in eval mode on its device."""

    model.eval()
    return reconstruct_faces(model, faces, PREDICT_BATCH)


def model_signature(image_size: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = TensorSpec(np.dtype(np.uint8), (-1, image_size, image_size, 3))
    return ModelSignature(inputs=Schema([spec]), outputs=Schema([spec]))


def pip_requirements() -> list[str]:
    """Pinned to this environment, so MLflow skips its slow requirement inference."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "pydantic", "pyyaml")]
    return [*pins, f"mlflow=={mlflow.__version__}"]


def copy_code(dest: Path) -> Path:
    """A minimal `facevae` package (the modules loading needs) under dest/; returns dest/facevae."""
    package = Path(__file__).parents[1]
    target = dest / "facevae"
    target.mkdir(parents=True, exist_ok=True)
    for name in CODE_MODULES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / name, target / name)
    return target


ENTRY_CODE = """\
# MLflow "model from code" entry point: the class lives in facevae.tracking.pyfunc (shipped in code/).
import mlflow
from facevae.tracking.pyfunc import FaceVAEPyfunc

mlflow.models.set_model(FaceVAEPyfunc())
"""


def log_pyfunc_model(model_path: Path, image_size: int, registered_name: str | None, example: np.ndarray | None = None):
    """Log model.pt as a pyfunc in the active run (and register it); returns MLflow's ModelInfo.

    Logged as a model from code (a three-line entry file), not a pickled object: nothing in the
    model depends on cloudpickle or on this package being installed where it is loaded.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "facevae_model.py"
        entry.write_text(ENTRY_CODE)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={MODEL_ARTIFACT: str(model_path)},
            code_paths=[str(copy_code(Path(tmp)))],
            signature=model_signature(image_size),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_name,
        )
