"""The semantic pipeline through the real ``openai`` client against a local server that misbehaves on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm import FakeLLMServer, always_ok, default_answer

from recbole_sracl.config import Config
from recbole_sracl.errors import LLMError
from recbole_sracl.semantic.build import build_semantic_files

KEY = "sk-test-key"
PROMPTS = 100  # tiny: 60 users + 40 items


def tiny_config(root: Path, tiny_yaml: Path, *extra: str) -> Config:
    settings = {"data_path": root, "semantic_backoff_seconds": 0.01, "semantic_timeout": 5.0,
                "semantic_concurrency": 4}
    settings.update(arg[2:].split("=", 1) for arg in extra)
    return Config(model="SASRec", dataset="tiny", config_file_list=[str(tiny_yaml)],
                  argv=[f"--{key}={value}" for key, value in settings.items()])


@pytest.fixture
def data(tmp_path, tiny_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    return root


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def build(config, server, **kwargs):
    return build_semantic_files(config, show_progress=False, llm="openai", base_url=server.base_url,
                                llm_model="fake-model", **kwargs)


def cache_lines(root: Path) -> list[dict]:
    path = root / "tiny" / "tiny.llm_cache.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class PerPrompt:
    """Script that misbehaves on the first ``failures`` requests of each prompt, then answers."""

    def __init__(self, action, failures=1, only=None):
        self.action, self.failures, self.only = action, failures, only
        self.seen: dict[str, int] = {}

    def __call__(self, number, message):
        self.seen[message] = self.seen.get(message, 0) + 1
        if (self.only is None or self.only in message) and self.seen[message] <= self.failures:
            return self.action
        return ("ok", default_answer(message))


def test_end_to_end_answers_are_cached_and_encoded(data, tiny_yaml, api_key):
    with FakeLLMServer(always_ok, api_key=KEY) as server:
        manifest = build(tiny_config(data, tiny_yaml), server, save_texts=True)
        assert len(server.messages()) == PROMPTS
        sent = server.requests[0]["body"]
        assert sent["temperature"] == 0.0 and sent["top_p"] == 0.001 and sent["model"] == "fake-model"
        assert sent["messages"][0]["role"] == "system"
        assert manifest["llm_report"]["answered"] == PROMPTS and manifest["llm_report"]["fallbacks"] == 0
        assert manifest["options"]["llm"]["provider"] == "openai"
        texts = [json.loads(line) for line in (data / "tiny" / "tiny.semantic_texts.jsonl").read_text().splitlines()]
        assert all(row["encoded_text"] == default_answer(row["prompt"]) for row in texts)
        assert len(cache_lines(data)) == PROMPTS
        # a second build asks nothing
        build(tiny_config(data, tiny_yaml), server)
        assert len(server.messages()) == PROMPTS


@pytest.mark.parametrize(
    "action",
    [("status", 429, {"Retry-After": "0.05"}), ("status", 500), ("status", 503), ("drop",), ("sleep", 1.5)],
    ids=["429-retry-after", "500", "503", "dropped-connection", "timeout"],
)
def test_transient_faults_are_retried_then_answered(action, data, tiny_yaml, api_key):
    script = PerPrompt(action, failures=1)
    extra = ["--semantic_timeout=0.5"] if action[0] == "sleep" else []
    with FakeLLMServer(script, api_key=KEY) as server:
        manifest = build(tiny_config(data, tiny_yaml, *extra), server)
    report = manifest["llm_report"]
    assert report["answered"] == PROMPTS and report["fallbacks"] == 0
    assert report["retries"] >= PROMPTS
    assert len(server.messages()) == 2 * PROMPTS


def test_malformed_and_empty_answers_fall_back_to_the_prompt_and_are_counted(data, tiny_yaml, api_key):
    def script(number, message):
        if message.startswith("title: Acme Pen Model 1;"):
            return ("truncated",)
        if message.startswith("title: Bolt Paper Model 2;"):
            return ("ok", "")
        return ("ok", default_answer(message))

    with FakeLLMServer(script, api_key=KEY) as server:
        manifest = build(tiny_config(data, tiny_yaml, "--semantic_max_retries=2"), server, save_texts=True)
    report = manifest["llm_report"]
    assert report["malformed"] >= 1 and report["empty"] >= 1
    assert report["fallbacks"] == report["malformed"] + report["empty"]
    texts = [json.loads(line) for line in (data / "tiny" / "tiny.semantic_texts.jsonl").read_text().splitlines()]
    fell_back = [row for row in texts if row["encoded_text"] == row["prompt"]]
    assert len(fell_back) == report["fallbacks"]
    statuses = [line["status"] for line in cache_lines(data)]
    assert statuses.count("empty") == report["empty"]  # empty answers are cached, malformed ones are not
    assert len(statuses) == PROMPTS - report["malformed"]


def test_wrong_key_stops_at_once_without_leaking_it(data, tiny_yaml, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123")
    with FakeLLMServer(always_ok, api_key=KEY) as server:
        with pytest.raises(LLMError, match="rejected the API key") as error:
            build(tiny_config(data, tiny_yaml), server)
        assert server.messages() == []  # not a single prompt was sent
    assert "sk-wrong-secret-123" not in str(error.value)


def test_wrong_key_mid_run_cancels_the_rest(data, tiny_yaml, api_key):
    class Revoked(PerPrompt):
        def __call__(self, number, message):
            return ("status", 401) if number > 10 else ("ok", default_answer(message))

    with FakeLLMServer(Revoked(None), api_key=KEY) as server:
        with pytest.raises(LLMError, match="rejected the API key"):
            build(tiny_config(data, tiny_yaml, "--semantic_concurrency=1"), server)
        assert len(server.messages()) <= 12  # no retry of the 401; at most one request already under way
    assert len(cache_lines(data)) == 10  # the answers received before are kept


def test_unreachable_server_is_one_clear_error(data, tiny_yaml, api_key):
    config = tiny_config(data, tiny_yaml)
    started = time.time()
    with pytest.raises(LLMError, match="cannot reach the LLM server at http://127.0.0.1:9/v1"):
        build_semantic_files(config, show_progress=False, llm="openai", base_url="http://127.0.0.1:9/v1")
    assert time.time() - started < 30


def test_persistent_failures_keep_the_answers_and_say_how_to_resume(data, tiny_yaml, api_key):
    script = PerPrompt(("status", 500), failures=100, only="Ink Cartridge Model 3")
    with FakeLLMServer(script, api_key=KEY) as server:
        with pytest.raises(LLMError, match="rerun the same command") as error:
            build(tiny_config(data, tiny_yaml, "--semantic_max_retries=1"), server)
        failed = int(str(error.value).split(" of ")[0])
        assert failed >= 1 and len(cache_lines(data)) == PROMPTS - failed
        # the server recovers: the rerun asks only the failed prompts
        script.failures = 0
        before = len(server.messages())
        build(tiny_config(data, tiny_yaml), server)
        assert len(server.messages()) - before == failed


def test_dry_run_counts_prompts_and_calls_nothing(data, tiny_yaml, api_key):
    with FakeLLMServer(always_ok, api_key=KEY) as server:
        summary = build(tiny_config(data, tiny_yaml), server, dry_run=True)
        assert server.messages() == []
    assert summary["to_send"] == PROMPTS and summary["estimated_input_tokens"] > 1000
    assert not (data / "tiny" / "tiny.semantic.json").exists()


def test_killed_build_resumes_sending_only_missing_prompts(data, tiny_yaml, tmp_path, api_key):
    served = []

    def slow(number, message):
        served.append(number)
        time.sleep(0.05)
        return ("ok", default_answer(message))

    command = [sys.executable, "-m", "recbole_sracl.semantic", "build", "--dataset=tiny", f"--data_path={data}",
               f"--config_files={tiny_yaml}", "--llm=openai", "--llm_model=fake-model", "--concurrency=2",
               "--no_progress"]
    with FakeLLMServer(slow, api_key=KEY) as server:
        process = subprocess.Popen(command + [f"--base_url={server.base_url}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=dict(os.environ, OPENAI_API_KEY=KEY), cwd=tmp_path)
        deadline = time.time() + 120
        while len(served) < 30 and time.time() < deadline:
            time.sleep(0.05)
        process.kill()
        process.wait()
        cached = len(cache_lines(data))
        assert 20 <= cached < PROMPTS
        before = len(server.messages())
        build(tiny_config(data, tiny_yaml), server)
        assert len(server.messages()) - before == PROMPTS - cached
    assert len({line["key"] for line in cache_lines(data)}) == PROMPTS
