"""MLflow tracking stores on this machine, read without MLflow: the file store (a directory of
YAML files, `./mlruns`) and the SQL store in a SQLite file (`sqlite:///mlflow.db`, read-only
with the standard library). They turn `models:/name/version`, `models:/name@alias`,
`models:/name/latest`, `models:/m-<id>` and `runs:/<run_id>/<path>` into a model directory.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

MLMODEL = "MLmodel"


def _store(tracking_uri: str | None) -> _FileStore | _SqliteStore:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        # MLflow's own default: ./mlruns if it holds experiments, else ./mlflow.db.
        uri = "mlruns" if any(Path("mlruns").glob("[0-9]*/meta.yaml")) else "sqlite:///mlflow.db"
    if uri.startswith("sqlite:"):
        # sqlite:///mlflow.db is relative, sqlite:////srv/mlflow.db absolute (SQLAlchemy's form).
        path = Path(uri.removeprefix("sqlite:///"))
        if not uri.startswith("sqlite:///") or not path.is_file():
            raise ValueError(f"tracking store {uri}: no such SQLite file")
        return _SqliteStore(path)
    path = _local_path(uri, what="tracking store")
    if not path.is_dir():
        raise ValueError(f"tracking store {uri}: no such directory")
    return _FileStore(path)


def _local_path(location: str, *, what: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else location)
    raise ValueError(f"{what} {location}: only local paths (or file: URIs) can be read")


def resolve_uri(uri: str, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """The model directory a `models:/` or `runs:/` URI names in the tracking store
    (`tracking_uri`, else MLFLOW_TRACKING_URI, else MLflow's default), and what the store says
    about it: run id, registered model and version, description."""
    return _resolve(uri, _store(tracking_uri))


def _resolve(uri: str, store: _FileStore | _SqliteStore) -> tuple[Path, dict[str, Any]]:
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if not run_id or not path:
            raise ValueError(f"{uri}: expected runs:/<run_id>/<artifact path>")
        artifacts = _local_path(store.run_artifacts(run_id), what="run artifacts")
        directory = artifacts / path
        if not (directory / MLMODEL).is_file():  # MLflow 3 logs models beside the run
            directory = _local_path(store.logged_model_of_run(run_id, path), what="model")
        return directory, {"run_id": run_id}
    rest = uri.removeprefix("models:/").strip("/")
    if rest.startswith("m-") and "/" not in rest and "@" not in rest:
        location, source_run = store.logged_model(rest)
        return _local_path(location, what="model"), {"run_id": source_run}
    match = re.fullmatch(r"([^/@]+)(?:/(\d+|latest)|@([^/]+))", rest)
    if match is None:
        raise ValueError(
            f"{uri}: expected models:/<name>/<version>, models:/<name>@<alias> or runs:/"
        )
    name = match[1]
    if match[3]:
        version = store.alias(name, match[3])
    elif match[2] == "latest":
        version = store.latest(name)
    else:
        version = int(match[2])
    found = store.model_version(name, version)
    location = found.pop("location")
    if location.startswith(("models:/", "runs:/")):
        directory, more = _resolve(location, store)
        found = more | found
    else:
        directory = _local_path(location, what="model version")
    return directory, found | {"registered_model": name, "registered_version": version}


def _describe(model_text: str | None, version_text: str | None) -> str:
    return " — ".join(text.strip() for text in (model_text, version_text) if text and text.strip())


class _FileStore:
    """MLflow's file store: `<root>/<experiment>/<run>/meta.yaml`, logged models under
    `<root>/<experiment>/models/`, registered models under `<root>/models/<name>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _yaml(self, path: Path) -> dict[str, Any]:
        import yaml

        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        return loaded if isinstance(loaded, dict) else {}

    def _registered(self, name: str) -> Path:
        folder = self.root / "models" / name
        if not (folder / "meta.yaml").is_file():
            raise ValueError(f"no registered model {name!r} in {self.root}")
        return folder

    def alias(self, name: str, alias: str) -> int:
        aliases = self._yaml(self._registered(name) / "meta.yaml").get("aliases") or {}
        if alias not in aliases:
            raise ValueError(f"registered model {name!r} has no alias {alias!r}")
        return int(aliases[alias])

    def latest(self, name: str) -> int:
        folder = self._registered(name)
        versions = [int(p.name.removeprefix("version-")) for p in folder.glob("version-*")]
        if not versions:
            raise ValueError(f"registered model {name!r} has no version")
        return max(versions)

    def model_version(self, name: str, version: int) -> dict[str, Any]:
        folder = self._registered(name)
        meta = self._yaml(folder / f"version-{version}" / "meta.yaml")
        if not meta:
            raise ValueError(f"registered model {name!r} has no version {version}")
        return {
            "location": meta.get("storage_location") or meta.get("source") or "",
            "run_id": meta.get("run_id"),
            "description": _describe(
                self._yaml(folder / "meta.yaml").get("description"), meta.get("description")
            ),
        }

    def run_artifacts(self, run_id: str) -> str:
        for meta in self.root.glob(f"*/{run_id}/meta.yaml"):
            return str(self._yaml(meta).get("artifact_uri", ""))
        raise ValueError(f"no run {run_id} in {self.root}")

    def logged_model(self, model_id: str) -> tuple[str, str | None]:
        for meta_path in self.root.glob(f"*/models/{model_id}/meta.yaml"):
            meta = self._yaml(meta_path)
            return str(meta.get("artifact_location", "")), meta.get("source_run_id")
        raise ValueError(f"no logged model {model_id} in {self.root}")

    def logged_model_of_run(self, run_id: str, name: str) -> str:
        for meta_path in self.root.glob("*/models/*/meta.yaml"):
            meta = self._yaml(meta_path)
            if meta.get("source_run_id") == run_id and meta.get("name") == name:
                return str(meta.get("artifact_location", ""))
        raise ValueError(f"run {run_id} has no model {name!r}")


class _SqliteStore:
    """MLflow's SQL store in a SQLite file, read-only (tables as MLflow 3 writes them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _one(self, query: str, *parameters: Any) -> tuple[Any, ...] | None:
        uri = f"file:{self.path.resolve()}?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True)
            try:
                row: tuple[Any, ...] | None = connection.execute(query, parameters).fetchone()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise ValueError(f"cannot read the tracking store {self.path}: {exc}") from exc
        return row

    def alias(self, name: str, alias: str) -> int:
        row = self._one(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", name, alias
        )
        if row is None:
            raise ValueError(f"registered model {name!r} has no alias {alias!r}")
        return int(row[0])

    def latest(self, name: str) -> int:
        row = self._one("SELECT MAX(version) FROM model_versions WHERE name = ?", name)
        if row is None or row[0] is None:
            raise ValueError(f"no registered model {name!r} in {self.path}")
        return int(row[0])

    def model_version(self, name: str, version: int) -> dict[str, Any]:
        row = self._one(
            "SELECT v.storage_location, v.source, v.run_id, v.description, m.description "
            "FROM model_versions v JOIN registered_models m ON m.name = v.name "
            "WHERE v.name = ? AND v.version = ?",
            name,
            version,
        )
        if row is None:
            raise ValueError(f"registered model {name!r} has no version {version} in {self.path}")
        storage, source, run_id, version_text, model_text = row
        return {
            "location": storage or source or "",
            "run_id": run_id,
            "description": _describe(model_text, version_text),
        }

    def run_artifacts(self, run_id: str) -> str:
        row = self._one("SELECT artifact_uri FROM runs WHERE run_uuid = ?", run_id)
        if row is None:
            raise ValueError(f"no run {run_id} in {self.path}")
        return str(row[0])

    def logged_model(self, model_id: str) -> tuple[str, str | None]:
        row = self._one(
            "SELECT artifact_location, source_run_id FROM logged_models WHERE model_id = ?",
            model_id,
        )
        if row is None:
            raise ValueError(f"no logged model {model_id} in {self.path}")
        return str(row[0]), row[1]

    def logged_model_of_run(self, run_id: str, name: str) -> str:
        row = self._one(
            "SELECT artifact_location FROM logged_models WHERE source_run_id = ? AND name = ?",
            run_id,
            name,
        )
        if row is None:
            raise ValueError(f"run {run_id} has no model {name!r}")
        return str(row[0])
