"""Ask an OpenAI-compatible server (DeepSeek, OpenAI, vLLM, Ollama, llama.cpp) for every prompt, resumably.

- The official ``openai`` client (``AsyncOpenAI``), bounded concurrency, temperature 0 and top_p 0.001.
- Retries with exponential backoff on 429 (honouring ``Retry-After``), 5xx, timeouts, dropped connections and
  unparseable replies; a wrong key (401/403) or unknown model (404) stops everything at once.
- Every answer is appended to a JSONL cache keyed by (model, prompt hash) as soon as it arrives, so an
  interrupted run resumes by asking only the missing prompts. A half-written last line (a killed process)
  is ignored when the cache is read.
- Empty answers are cached and fall back to the prompt text; unparseable ones fall back without being cached;
  both are counted.
- The API key comes from an environment variable only and is scrubbed from every message we produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from recbole_sracl.errors import LLMError
from recbole_sracl.semantic.prompts import Prompt
from recbole_sracl.utils import redact

CACHE_FORMAT = 1


@dataclass
class LLMSettings:
    """How to reach the server and how hard to try."""

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 60.0
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.001
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # abort when this many requests in a row fail to connect (the server went away); 0 = 3 * concurrency
    max_consecutive_connection_failures: int = 0

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


@dataclass
class LLMReport:
    """What a run did: counts of cached, asked, answered, empty, malformed and failed prompts."""

    total: int = 0
    cached: int = 0
    asked: int = 0
    answered: int = 0
    empty: int = 0
    malformed: int = 0
    failed: int = 0
    retries: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "errors"}


def cache_key(model: str, prompt: Prompt) -> str:
    """Cache key of one prompt for one model."""
    return hashlib.sha256(f"{model}\n{prompt.sha256()}".encode()).hexdigest()


class ResponseCache:
    """Append-only JSONL file of answers, one JSON object per line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self.records[record["key"]] = record
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1  # e.g. the last line of a killed run
        self._handle = None

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
            self._handle = open(self.path, "a", encoding="utf-8")
            if needs_newline:  # never glue a new record onto a half-written one
                self._handle.write("\n")
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.records[record["key"]] = record

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


class _Fatal(Exception):
    """Stop every request: the key is wrong or the model does not exist."""


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token for English)."""
    return max(1, len(text) // 4)


def dry_run_summary(prompts: Sequence[Prompt], settings: LLMSettings, cache: ResponseCache) -> dict[str, int]:
    """How many prompts a real run would send and roughly how many tokens, without calling anything."""
    missing = [prompt for prompt in prompts if cache.get(cache_key(settings.model, prompt)) is None]
    input_tokens = sum(estimate_tokens(prompt.system) + estimate_tokens(prompt.message) for prompt in missing)
    return {
        "prompts": len(prompts),
        "cached": len(prompts) - len(missing),
        "to_send": len(missing),
        "estimated_input_tokens": input_tokens,
        "max_output_tokens": len(missing) * settings.max_tokens,
    }


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LLMClient:
    """Answers prompts through an OpenAI-compatible chat endpoint, with the cache in front of it."""

    def __init__(self, settings: LLMSettings, cache: ResponseCache, progress: Callable[[int], None] | None = None):
        self.settings, self.cache, self.progress = settings, cache, progress
        self.report = LLMReport()
        self._consecutive_connection_failures = 0

    def _scrub(self, text: str) -> str:
        return redact(text, [self.settings.api_key()])

    def _describe(self, error: BaseException) -> str:
        return self._scrub(f"{type(error).__name__}: {error}".splitlines()[0])

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=self.settings.api_key() or "no-key-set",
            base_url=self.settings.base_url,
            max_retries=0,  # retries are ours: backoff, Retry-After, counting
            timeout=self.settings.timeout,
        )

    async def _preflight(self, client) -> None:
        """One cheap request (list models) to catch a wrong key or an unreachable server before any prompt."""
        import openai

        where = self.settings.base_url or "https://api.openai.com/v1"
        try:
            await client.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise LLMError(
                f"the server at {where} rejected the API key ({error.status_code}); set a valid key in the "
                f"{self.settings.api_key_env} environment variable"
            ) from None
        except openai.APIConnectionError as error:
            raise LLMError(
                f"cannot reach the LLM server at {where} ({self._describe(error)}); check --base_url and that "
                f"the server is running"
            ) from None
        except openai.APIError:
            pass  # some servers do not implement /models; the first prompt will tell

    async def _ask(self, client, prompt: Prompt) -> tuple[str, str | None, dict[str, Any]]:
        """One prompt with retries. Returns (status, text, usage); status is ok, empty or malformed."""
        import openai

        settings, last_error = self.settings, "no attempt"
        for attempt in range(settings.max_retries + 1):
            wait = min(settings.backoff_max, settings.backoff_base * 2**attempt) * (0.5 + random.random() / 2)
            try:
                response = await client.chat.completions.create(
                    model=settings.model,
                    messages=[{"role": "system", "content": prompt.system},
                              {"role": "user", "content": prompt.message}],
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    max_tokens=settings.max_tokens,
                )
                self._consecutive_connection_failures = 0
                choices = getattr(response, "choices", None) or []
                text = getattr(getattr(choices[0], "message", None), "content", None) if choices else None
                usage = getattr(response, "usage", None)
                usage = {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                         "completion_tokens": getattr(usage, "completion_tokens", 0) or 0}
                if not isinstance(text, str):
                    last_error = "reply without message content"
                    raise ValueError(last_error)
                return ("ok" if text.strip() else "empty"), text.strip(), usage
            except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
                raise _Fatal(
                    f"the server rejected the API key ({error.status_code}); set a valid key in "
                    f"{settings.api_key_env}"
                ) from None
            except openai.NotFoundError as error:
                raise _Fatal(
                    f"model '{settings.model}' or endpoint not found on the server ({self._describe(error)}); "
                    f"check --llm_model and --base_url"
                ) from None
            except openai.RateLimitError as error:
                wait = _retry_after(error) or wait
                last_error = self._describe(error)
            except (openai.APITimeoutError, openai.APIConnectionError) as error:
                last_error = self._describe(error)
                if not isinstance(error, openai.APITimeoutError):
                    self._consecutive_connection_failures += 1
                    limit = settings.max_consecutive_connection_failures or 3 * settings.concurrency
                    if self._consecutive_connection_failures >= limit:
                        raise _Fatal(
                            f"the server at {settings.base_url} stopped answering ({limit} connection failures "
                            f"in a row; last: {last_error})"
                        ) from None
            except openai.APIStatusError as error:
                last_error = self._describe(error)
                if error.status_code < 500 and error.status_code not in (408, 409):
                    return "malformed", None, {}  # e.g. 400 prompt too long: retrying will not help
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
                last_error = self._describe(error)  # truncated or unparseable body
                if attempt == settings.max_retries:
                    return "malformed", None, {}
            if attempt < settings.max_retries:
                self.report.retries += 1
                await asyncio.sleep(wait)
        raise RuntimeError(last_error)

    async def _answer(self, client, prompt: Prompt, semaphore: asyncio.Semaphore) -> str | None:
        async with semaphore:
            try:
                status, text, usage = await self._ask(client, prompt)
            except RuntimeError as error:
                self.report.failed += 1
                if len(self.report.errors) < 5:
                    self.report.errors.append(str(error))
                return None
            finally:
                if self.progress is not None:
                    self.progress(1)
        if status == "malformed":
            self.report.malformed += 1
            return None
        self.report.answered += status == "ok"
        self.report.empty += status == "empty"
        self.report.prompt_tokens += usage.get("prompt_tokens", 0)
        self.report.completion_tokens += usage.get("completion_tokens", 0)
        self.cache.append({
            "format": CACHE_FORMAT, "key": cache_key(self.settings.model, prompt), "model": self.settings.model,
            "prompt_sha256": prompt.sha256(), "kind": prompt.kind, "token": prompt.token, "status": status,
            "response": text, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        return text if status == "ok" else None

    async def _run(self, prompts: Sequence[Prompt]) -> None:
        client = self._client()
        try:
            await self._preflight(client)
            semaphore = asyncio.Semaphore(self.settings.concurrency)
            tasks = [asyncio.create_task(self._answer(client, prompt, semaphore)) for prompt in prompts]
            try:
                await asyncio.gather(*tasks)
            except _Fatal as error:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise LLMError(f"{self._scrub(str(error))}; answers received so far are kept in {self.cache.path}") from None
        finally:
            await client.close()

    def complete(self, prompts: Sequence[Prompt]) -> dict[str, str]:
        """``{cache key: answer}`` for every prompt whose answer is usable (cached or new).

        Raises:
            LLMError: wrong key, unknown model, unreachable server, or prompts that still failed after all
                retries (their answers are not cached, so rerunning asks only those).
        """
        started = time.time()
        self.report.total = len(prompts)
        missing = [p for p in prompts if self.cache.get(cache_key(self.settings.model, p)) is None]
        self.report.cached = len(prompts) - len(missing)
        self.report.asked = len(missing)
        if self.progress is not None and self.report.cached:
            self.progress(self.report.cached)
        try:
            if missing:
                asyncio.run(self._run(missing))
        finally:
            self.cache.close()
            self.report.seconds = time.time() - started
        if self.report.failed:
            raise LLMError(
                f"{self.report.failed} of {len(missing)} prompts still failed after {self.settings.max_retries} "
                f"retries (e.g. {self.report.errors[0]}); the {self.report.answered + self.report.empty} answers "
                f"received are cached in {self.cache.path}: rerun the same command to ask only the missing ones"
            )
        answers = {}
        for prompt in prompts:
            record = self.cache.get(cache_key(self.settings.model, prompt))
            if record is not None and record.get("status") == "ok" and record.get("response"):
                answers[cache_key(self.settings.model, prompt)] = record["response"]
        self.report.empty = sum(
            1 for p in prompts if (self.cache.get(cache_key(self.settings.model, p)) or {}).get("status") == "empty"
        )
        return answers
