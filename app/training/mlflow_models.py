"""MLflow models for `modelport import`: a model directory (an `MLmodel` file with the `sklearn`
flavour), or a `models:/` or `runs:/` URI resolved through a local tracking store.

Read without MLflow itself: `MLmodel` is YAML, the artifact a pickle, cloudpickle or skops file
(exactly how `mlflow.sklearn.load_model` reads it), and a local tracking store is a directory of
YAML files (MLflow's file store) or a SQLite database, read here with the standard library. So
importing needs no MLflow install (77 MB more, with its dependencies) and never runs its code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.training.mlflow_stores import MLMODEL, resolve_uri
from schemas.cards import FeatureSpec, ModelSource

SERIALIZATIONS = ("pickle", "cloudpickle", "skops")
# A signature's column types, as card dtypes (MLflow's DataType names).
_COLUMN_TYPES = {
    "long": "int",
    "integer": "int",
    "boolean": "int",
    "double": "float",
    "float": "float",
}


@dataclass(frozen=True)
class MlflowModel:
    directory: Path
    artifact: Path
    serialization: str  # pickle, cloudpickle or skops
    versions: dict[str, str | None]  # the card's *_version fields, as far as the model says
    source: ModelSource
    description: str = ""
    signature: dict[str, str] | None = None  # feature name (or x0..) -> card dtype
    example: list[Any] | None = None  # the input example's first row, in its own order
    example_columns: list[str] | None = None


def is_mlflow_source(source: str) -> bool:
    if source.startswith(("models:/", "runs:/")):
        return True
    path = Path(source)
    return path.name == MLMODEL or (path / MLMODEL).is_file()


def open_mlflow_model(source: str, tracking_uri: str | None = None) -> MlflowModel:
    """The MLflow model `source` names: a directory, its MLmodel file, or a URI."""
    found: dict[str, Any] = {}
    if source.startswith(("models:/", "runs:/")):
        directory, found = resolve_uri(source, tracking_uri)
    else:
        directory = Path(source).parent if Path(source).name == MLMODEL else Path(source)
    if not (directory / MLMODEL).is_file():
        raise ValueError(f"no {MLMODEL} file in {directory}")
    return _read_model(directory, uri=source if found else None, found=found)


# -- the model directory -------------------------------------------------------------------------


def _read_model(directory: Path, *, uri: str | None, found: dict[str, Any]) -> MlflowModel:
    import yaml

    meta = yaml.safe_load((directory / MLMODEL).read_text(encoding="utf-8")) or {}
    flavors = meta.get("flavors") or {}
    flavor = flavors.get("sklearn")
    if not isinstance(flavor, dict):
        raise ValueError(
            f"{directory} is an MLflow model without the sklearn flavour "
            f"(it has {', '.join(flavors) or 'none'}): only scikit-learn models are served"
        )
    if flavor.get("code"):
        raise ValueError(
            "the model was logged with code paths: the server would need that code to load it"
        )
    serialization = str(flavor.get("serialization_format", "pickle"))
    if serialization not in SERIALIZATIONS:
        raise ValueError(f"unknown serialization format {serialization!r}")
    artifact = directory / str(flavor.get("pickled_model", "model.pkl"))
    if not artifact.is_file():
        raise ValueError(f"the MLflow model's artifact {artifact.name} is missing")
    pins = _requirements(directory / "requirements.txt")
    python = (flavors.get("python_function") or {}).get("python_version") or _python_env(directory)
    versions = {
        "sklearn_version": flavor.get("sklearn_version") or pins.get("scikit-learn"),
        "python_version": python,
        "numpy_version": pins.get("numpy"),
        "scipy_version": pins.get("scipy"),
    }
    signature = _signature(meta.get("signature"))
    example, columns = _example(directory, meta.get("saved_input_example_info"))
    source = ModelSource(
        kind="mlflow",
        location=str(directory.resolve()),
        uri=uri,
        run_id=found.get("run_id") or meta.get("run_id"),
        registered_model=found.get("registered_model"),
        registered_version=found.get("registered_version"),
        serialization=serialization,
    )
    return MlflowModel(
        directory=directory,
        artifact=artifact,
        serialization=serialization,
        versions={k: None if v is None else str(v) for k, v in versions.items()},
        source=source,
        description=found.get("description", ""),
        signature=signature,
        example=example,
        example_columns=columns,
    )


def _requirements(path: Path) -> dict[str, str]:
    """Exact pins (`name==version`) of requirements.txt, by lower-case name."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def _python_env(directory: Path) -> str | None:
    path = directory / "python_env.yaml"
    if not path.is_file():
        return None
    import yaml

    python = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("python")
    return None if python is None else str(python)


def _signature(signature: Any) -> dict[str, str] | None:
    """Feature name -> card dtype from the signature's inputs (None without a signature).
    String columns map to "category": their values come from the model's encoder or --data."""
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    inputs = json.loads(signature["inputs"])
    if len(inputs) == 1 and inputs[0].get("type") == "tensor":
        spec = inputs[0]["tensor-spec"]
        shape, dtype = spec.get("shape", []), str(spec.get("dtype", ""))
        if len(shape) != 2 or shape[1] < 1:
            raise ValueError(f"the signature's tensor has shape {shape}: rows of features expected")
        kind = "int" if dtype.startswith(("int", "uint", "bool")) else "float"
        if not dtype.startswith(("int", "uint", "bool", "float")):
            raise ValueError(f"the signature's tensor holds {dtype}: numbers expected")
        return {f"x{i}": kind for i in range(shape[1])}
    found: dict[str, str] = {}
    for column in inputs:
        name, kind = column.get("name"), column.get("type")
        if name is None or kind == "tensor":
            raise ValueError("the signature mixes tensors or has unnamed columns: not supported")
        if kind == "string":
            found[name] = "category"
        elif kind in _COLUMN_TYPES:
            found[name] = _COLUMN_TYPES[kind]
        else:
            raise ValueError(f"signature column {name} is of type {kind}: not supported")
    return found


def _example(directory: Path, info: Any) -> tuple[list[Any] | None, list[str] | None]:
    if not isinstance(info, dict) or not info.get("artifact_path"):
        return None, None
    path = directory / str(info["artifact_path"])
    if not path.is_file():
        return None, None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(saved, dict) and "inputs" in saved:
        saved = saved["inputs"]
    if isinstance(saved, dict) and "data" in saved:
        rows, columns = saved["data"], saved.get("columns")
        return (list(rows[0]) if rows else None), columns
    if isinstance(saved, list) and saved and isinstance(saved[0], list):
        return list(saved[0]), None
    return None, None


def apply_signature(features: list[FeatureSpec], signature: dict[str, str]) -> list[FeatureSpec]:
    """The estimator's features typed by the signature (names must agree)."""
    if sorted(signature) != sorted(f.name for f in features):
        raise ValueError(
            f"the MLflow signature names {', '.join(signature)}, but the model takes "
            f"{', '.join(f.name for f in features)}"
        )
    typed = []
    for feature in features:
        dtype = signature[feature.name]
        if dtype == "category" or feature.dtype == "category":
            typed.append(feature)  # categories come from the encoder, or from --data
        else:
            typed.append(feature.model_copy(update={"dtype": dtype}))
    return typed
