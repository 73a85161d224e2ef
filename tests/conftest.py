"""Shared fixtures: a tiny atomic dataset, a clean working directory, semantic files built once."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from tiny_data import write_tiny_config, write_tiny_dataset  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """RecBole writes ./log, ./saved and ./log_tensorboard: keep them in each test's own folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data folder holding the tiny dataset (read-only for tests: copy it before changing files)."""
    root = tmp_path_factory.mktemp("data")
    write_tiny_dataset(root)
    return root


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory) -> Path:
    return write_tiny_config(tmp_path_factory.mktemp("config") / "tiny.yaml")


@pytest.fixture(scope="session")
def semantic_root(tmp_path_factory, tiny_root, tiny_yaml) -> Path:
    """The tiny dataset with semantic files built once per session (offline encoder, no LLM), per-prefix files
    (``user_granularity: prefix``) included."""
    from recbole_sracl.config import Config
    from recbole_sracl.semantic.build import build_semantic_files

    root = tmp_path_factory.mktemp("semantic")
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        config = Config(model="SASRec", dataset="tiny", config_file_list=[str(tiny_yaml)],
                        argv=[f"--data_path={root}", "--user_granularity=prefix"])
        build_semantic_files(config, show_progress=False, save_texts=True)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def semantic_copy(tmp_path, semantic_root) -> Path:
    """A private, writable copy of the tiny dataset with its semantic files."""
    root = tmp_path / "data"
    shutil.copytree(semantic_root / "tiny", root / "tiny")
    return root


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    """Overrides for a fast run on the tiny dataset; ``extra`` ``--key=value`` items win over the defaults."""
    settings = {"data_path": str(root), "epochs": "1", "show_progress": "False", "state": "WARNING"}
    settings.update(arg[2:].split("=", 1) for arg in extra)
    return [f"--{key}={value}" for key, value in settings.items()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
