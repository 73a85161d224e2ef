"""Model/trainer registry and small shared helpers.

``get_model`` and ``get_trainer`` look in this package first and then fall back to RecBole's own, so every
built-in RecBole model runs through ``run_recbole_sracl.py`` too.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from recbole_sracl.errors import ConfigError

# name -> module holding the class of the same name
MODEL_REGISTRY: dict[str, str] = {
    "CL4SRec": "recbole_sracl.model.cl4srec",
    "DuoRec": "recbole_sracl.model.duorec",
    "SRACL": "recbole_sracl.model.sracl",
}

_RECBOLE_MODEL_PACKAGES = (
    "sequential_recommender",
    "general_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
)


def properties_dir() -> Path:
    """The folder holding our yaml layers (``overall.yaml``, ``model/``, ``dataset/``)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "properties", package.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"recbole_sracl properties not found next to {package}; reinstall the package")


def recbole_model_names(packages: Iterable[str] = _RECBOLE_MODEL_PACKAGES) -> list[str]:
    """Names of RecBole's built-in models in the given ``recbole.model`` sub-packages."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for package in packages:
        module = importlib.import_module(f"recbole.model.{package}")
        names += [
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, AbstractRecommender)
        ]
    return sorted(set(names))


def get_model(model_name: str) -> type:
    """Return the model class called ``model_name``: ours first, then RecBole's built-ins.

    Raises:
        ConfigError: the name is unknown; the message lists the valid names.
    """
    if model_name in MODEL_REGISTRY:
        return getattr(importlib.import_module(MODEL_REGISTRY[model_name]), model_name)
    for package in _RECBOLE_MODEL_PACKAGES + ("exlib_recommender",):
        module_path = f"recbole.model.{package}.{model_name.lower()}"
        try:
            found = importlib.util.find_spec(module_path) is not None
        except ImportError:  # exlib_recommender needs xgboost/lightgbm, which are optional
            continue
        if found:
            model_class = getattr(importlib.import_module(module_path), model_name, None)
            if model_class is not None:
                return model_class
    sequential = recbole_model_names(["sequential_recommender"])
    every = sorted(MODEL_REGISTRY) + recbole_model_names()
    close = difflib.get_close_matches(model_name, every, n=1, cutoff=0.6)
    case = [name for name in every if name.lower() == model_name.lower()]
    hint = f" Did you mean '{(case or close)[0]}'?" if case or close else ""
    raise ConfigError(
        f"unknown model '{model_name}'.{hint} Valid: {', '.join(sorted(MODEL_REGISTRY))} (recbole_sracl) and "
        f"RecBole's {', '.join(sequential)} (sequential; RecBole's general/context/knowledge models work too)."
    )


def get_trainer(model_type: Any, model_name: str) -> type:
    """Return the trainer class for a model: a registered one, else RecBole's made checkpoint-safe.

    Every trainer we hand out saves checkpoints that load with ``torch.load(weights_only=True)``.
    """
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_sracl import trainer as our_trainers

    ours = getattr(our_trainers, f"{model_name}Trainer", None)
    if ours is not None:
        return ours
    recbole_trainer = recbole_get_trainer(model_type, model_name)
    return our_trainers.make_safe_trainer(recbole_trainer)


# ---------------------------------------------------------------------------------------------------------
# files


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write ``path`` through a temporary file in the same folder and rename it into place.

    A crash leaves either the old file or the new one, never a half-written file that looks valid.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda handle: json.dump(data, handle, indent=2, sort_keys=True, default=str))


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
