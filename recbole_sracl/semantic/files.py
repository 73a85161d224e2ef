"""Semantic atomic files, their manifest, and the checks that refuse stale or broken file sets.

Files written into the dataset folder (RecBole atomic format, ids are the original tokens)::

    <ds>.uemb   uemb_id:token  uemb:float_seq   one semantic vector per user (L2-normalised)
    <ds>.iemb   iemb_id:token  iemb:float_seq   one semantic vector per item
    <ds>.unbr   unbr_id:token  unbr:token_seq   the user's k most similar users, best first
    <ds>.inbr   inbr_id:token  inbr:token_seq   the item's k most similar items, best first
    <ds>.pemb   pemb_id:token  pemb:float_seq   with user_granularity: prefix, one vector per training prefix
    <ds>.pnbr   pnbr_id:token  pnbr:token_seq   the prefix's k most similar training prefixes, best first
    <ds>.semantic.json                          manifest: what produced the files, hashes, counts

Each file has its own id field name (RecBole's ``preload_weight`` breaks when two files share one) and the
id and list fields are declared as aliases of the user/item id, so RecBole maps the tokens straight to its
internal ids. Prefix ids (``<user>:<prefix length>``) are neither users nor items, so the prefix files are read
by SRACL itself (:func:`read_embedding_file`, :func:`read_neighbour_file`) rather than through RecBole.
"""

from __future__ import annotations

import json
import os
from logging import getLogger
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from recbole_sracl.data.utils import dataset_dir, ensure_dataset_files
from recbole_sracl.errors import SemanticFilesError
from recbole_sracl.utils import atomic_write, atomic_write_json, file_sha256

MANIFEST_FORMAT = "recbole_sracl-semantic-1"
SUFFIXES = {
    "uemb": ("user", "embedding"),
    "iemb": ("item", "embedding"),
    "unbr": ("user", "neighbours"),
    "inbr": ("item", "neighbours"),
    "pemb": ("prefix", "embedding"),
    "pnbr": ("prefix", "neighbours"),
}
RECBOLE_SUFFIXES = ("uemb", "iemb", "unbr", "inbr")  # loaded through RecBole's additional_feat_suffix
SIDE_GROUP = {"user": "users", "item": "items", "prefix": "prefixes"}  # SUFFIXES side -> manifest "k" key
# settings that change which interactions exist or how they are split
FINGERPRINT_KEYS = (
    "USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "field_separator", "seq_separator", "rm_dup_inter",
    "val_interval", "filter_inter_by_user_or_item", "user_inter_num_interval", "item_inter_num_interval",
    "benchmark_filename",
)


def manifest_path(config: Any) -> Path:
    return dataset_dir(config) / f"{config['dataset']}.semantic.json"


def semantic_path(config: Any, suffix: str) -> Path:
    return dataset_dir(config) / f"{config['dataset']}.{suffix}"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def dataset_fingerprint(config: Any) -> dict[str, Any]:
    """Hashes of the atomic files RecBole loads and the settings that decide the training split."""
    folder, name = dataset_dir(config), config["dataset"]
    load_col = config["load_col"] or {}
    loaded = ["inter"] + [suffix for suffix in ("item", "user") if suffix in load_col]
    files = {
        f"{name}.{suffix}": file_sha256(folder / f"{name}.{suffix}")
        for suffix in loaded
        if (folder / f"{name}.{suffix}").is_file()
    }
    eval_args = config["eval_args"] or {}
    settings = {key: _plain(config[key]) for key in FINGERPRINT_KEYS}
    settings["loaded_files"] = loaded
    settings["split"] = _plain({key: eval_args.get(key) for key in ("split", "order", "group_by")})
    return {"dataset": name, "files": files, "settings": settings}


def build_command(config: Any, extra: str = "") -> str:
    """The exact command that (re)builds the semantic files for this configuration."""
    base = os.path.dirname(os.path.normpath(str(config["data_path"])))
    parts = ["python -m recbole_sracl.semantic build", f"--dataset={config['dataset']}", f"--data_path={base or '.'}"]
    files = getattr(config, "config_file_list", None)
    if files:
        parts.append("--config_files=" + ",".join(files))
    if config["user_granularity"] == "prefix":
        parts.append("--user_granularity=prefix")
    return " ".join(parts) + (f" {extra}" if extra else "")


# ---- writing ------------------------------------------------------------------------------------------------


def write_embedding_file(path: Path, suffix: str, tokens: Sequence[str], vectors: np.ndarray) -> None:
    """``<suffix>_id:token`` + ``<suffix>:float_seq`` rows, written atomically."""
    vectors = np.asarray(vectors, dtype=np.float32)
    row_format = " ".join(["%.7g"] * vectors.shape[1])

    def write(handle) -> None:
        handle.write(f"{suffix}_id:token\t{suffix}:float_seq\n")
        for token, row in zip(tokens, vectors.tolist()):
            handle.write(f"{token}\t{row_format % tuple(row)}\n")

    atomic_write(path, write)


def write_neighbour_file(path: Path, suffix: str, tokens: Sequence[str], neighbours: Iterable[Sequence[str]]) -> None:
    """``<suffix>_id:token`` + ``<suffix>:token_seq`` rows (neighbours best first), written atomically."""

    def write(handle) -> None:
        handle.write(f"{suffix}_id:token\t{suffix}:token_seq\n")
        for token, row in zip(tokens, neighbours):
            handle.write(f"{token}\t{' '.join(row)}\n")

    atomic_write(path, write)


def write_manifest(config: Any, manifest: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(config), manifest)


# ---- reading and checking -----------------------------------------------------------------------------------


def _read_rows(path: Path) -> tuple[list[str], list[str], list[str]]:
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        tokens, values = [], []
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            token, sep, value = line.partition("\t")
            if not sep:
                raise SemanticFilesError(f"{path}, line {number}: expected 'id<TAB>values'")
            tokens.append(token)
            values.append(value)
    return header, tokens, values


def read_embedding_file(path: Path, suffix: str, dimension: int | None = None) -> tuple[list[str], np.ndarray]:
    """Tokens and ``[n, dim]`` vectors of an embedding file, checked for shape and finite values.

    Raises:
        SemanticFilesError: bad header, ragged rows, wrong dimension, NaN/inf values, duplicate ids.
    """
    header, tokens, values = _read_rows(path)
    if header != [f"{suffix}_id:token", f"{suffix}:float_seq"]:
        raise SemanticFilesError(f"{path}: header must be '{suffix}_id:token<TAB>{suffix}:float_seq', got {header}")
    if not tokens:
        raise SemanticFilesError(f"{path} has no rows")
    counts = np.array([value.count(" ") + 1 for value in values])
    expected = dimension or int(counts[0])
    wrong = np.flatnonzero(counts != expected)
    if len(wrong):
        raise SemanticFilesError(
            f"{path}: row for id '{tokens[wrong[0]]}' has {counts[wrong[0]]} values, expected dimension {expected} "
            f"(the manifest's); the file is damaged or from another encoder"
        )
    try:
        vectors = np.array(" ".join(values).split(), dtype=np.float64).reshape(len(tokens), expected)
    except ValueError as error:
        raise SemanticFilesError(f"{path}: non-numeric value ({error})") from None
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise SemanticFilesError(
            f"{path}: {len(bad)} vector(s) contain NaN or inf (e.g. id '{tokens[bad[0]]}')"
        )
    _check_unique(path, tokens)
    return tokens, vectors


def read_neighbour_file(path: Path, suffix: str) -> tuple[list[str], list[list[str]]]:
    """Tokens and neighbour token lists of a neighbour file.

    Raises:
        SemanticFilesError: bad header, duplicate ids, a row listing itself.
    """
    header, tokens, values = _read_rows(path)
    if header != [f"{suffix}_id:token", f"{suffix}:token_seq"]:
        raise SemanticFilesError(f"{path}: header must be '{suffix}_id:token<TAB>{suffix}:token_seq', got {header}")
    _check_unique(path, tokens)
    lists = [value.split() for value in values]
    for token, row in zip(tokens, lists):
        if token in row:
            raise SemanticFilesError(f"{path}: id '{token}' lists itself as a neighbour")
    return tokens, lists


def _check_unique(path: Path, tokens: list[str]) -> None:
    if len(set(tokens)) != len(tokens):
        seen, duplicate = set(), None
        for token in tokens:
            if token in seen:
                duplicate = token
                break
            seen.add(token)
        raise SemanticFilesError(f"{path}: id '{duplicate}' appears more than once")


def check_semantic_files(config: Any, suffixes: Sequence[str]) -> dict[str, Any]:
    """Refuse missing, stale, damaged or inconsistent semantic files; return the manifest.

    Raises:
        SemanticFilesError: naming the problem and the exact ``semantic build`` command that fixes it.
    """
    command = build_command(config)
    manifest_file = manifest_path(config)
    if not manifest_file.is_file():
        raise SemanticFilesError(
            f"no semantic files for '{config['dataset']}' (missing {manifest_file}); build them with: {command}"
        )
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SemanticFilesError(f"{manifest_file} is not valid JSON; rebuild with: {command}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise SemanticFilesError(f"{manifest_file} has an unknown format; rebuild with: {command}")
    current = dataset_fingerprint(config)
    built = manifest.get("fingerprint", {})
    if built != current:
        raise SemanticFilesError(
            f"stale semantic files for '{config['dataset']}': {describe_difference(built, current)} since they "
            f"were built; rebuild them with: {command}"
        )
    for suffix in suffixes:
        path, entry = semantic_path(config, suffix), manifest.get("files", {}).get(f"{config['dataset']}.{suffix}")
        if entry is None or not path.is_file():
            raise SemanticFilesError(f"{path} is missing (the manifest lists it: {entry is not None}); rebuild with: {command}")
        side, kind = SUFFIXES[suffix]
        try:
            if kind == "embedding":
                tokens, _ = read_embedding_file(path, suffix, manifest["dimension"])
            else:
                tokens, lists = read_neighbour_file(path, suffix)
        except SemanticFilesError as error:
            raise SemanticFilesError(f"{error}; rebuild with: {command}") from None
        if kind != "embedding":
            unknown = {token for row in lists for token in row} - set(tokens)
            if unknown:
                raise SemanticFilesError(
                    f"{path}: neighbour id(s) {sorted(unknown)[:3]} are not in the {side} pool of the file "
                    f"(not {side}s of '{config['dataset']}'); rebuild with: {command}"
                )
        if file_sha256(path) != entry["sha256"]:
            raise SemanticFilesError(
                f"{path} was modified after it was built (its hash no longer matches {manifest_file.name}); "
                f"rebuild with: {command}"
            )
        if len(tokens) != entry["rows"]:
            raise SemanticFilesError(f"{path}: {len(tokens)} rows, the manifest says {entry['rows']}; rebuild with: {command}")
    return manifest


def describe_difference(built: dict[str, Any], current: dict[str, Any]) -> str:
    """Human summary of what changed between two fingerprints."""
    changes = []
    if built.get("dataset") != current.get("dataset"):
        return f"they were built for dataset '{built.get('dataset')}', not '{current.get('dataset')}'"
    for name in sorted(set(built.get("files", {})) | set(current.get("files", {}))):
        if built.get("files", {}).get(name) != current.get("files", {}).get(name):
            changes.append(f"{name} changed")
    for key in sorted(set(built.get("settings", {})) | set(current.get("settings", {}))):
        before, now = built.get("settings", {}).get(key), current.get("settings", {}).get(key)
        if before != now:
            changes.append(f"setting {key} is {now!r} (was {before!r})")
    return ", ".join(changes) or "the dataset fingerprint changed"


def used_files(manifest: dict[str, Any], suffixes: Sequence[str]) -> dict[str, Any]:
    """The part of a manifest that identifies what a run read: when and how the files were built, and the
    sha256 of each file with one of ``suffixes``."""
    return {
        "created": manifest.get("created"),
        "options": manifest.get("options"),
        "files": {name: entry["sha256"] for name, entry in manifest["files"].items()
                  if name.rsplit(".", 1)[-1] in suffixes},
    }


def register_semantic_files(config: Any, suffixes: Sequence[str]) -> dict[str, Any] | None:
    """Check (or build, for auto-build datasets) the semantic files and tell RecBole to load them.

    Sets ``additional_feat_suffix``, ``load_col``, ``alias_of_user_id``/``alias_of_item_id`` and
    ``preload_weight`` for the given user/item suffixes; prefix files (``pemb``, ``pnbr``) are only checked.
    """
    if not suffixes:
        return None
    ensure_dataset_files(config)
    auto = config["semantic_auto_build"] or []
    auto = [auto] if isinstance(auto, str) else list(auto)
    try:
        manifest = check_semantic_files(config, suffixes)
    except SemanticFilesError as error:
        if config["dataset"] not in auto:
            raise
        from recbole_sracl.semantic.build import build_semantic_files
        from recbole_sracl.semantic.encoder import OFFLINE_DEFAULT

        message = (f"semantic files for '{config['dataset']}' are not usable ({str(error).split(';')[0]}); "
                   f"building them now with the offline defaults (no LLM, {OFFLINE_DEFAULT} encoder)")
        getLogger(__name__).warning(message)
        print(message, flush=True)
        build_semantic_files(config, llm="none", encoder=OFFLINE_DEFAULT)
        manifest = check_semantic_files(config, suffixes)
    stored_k = min(manifest["k"][SIDE_GROUP[SUFFIXES[suffix][0]]] for suffix in suffixes)
    wanted_k = config["k"]
    if wanted_k is not None and wanted_k > stored_k:
        command = build_command(config, f"--k={wanted_k}")
        raise SemanticFilesError(
            f"k={wanted_k} but the semantic files of '{config['dataset']}' store only {stored_k} neighbours "
            f"per row; lower --k or rebuild with: {command}"
        )
    suffixes = [suffix for suffix in suffixes if suffix in RECBOLE_SUFFIXES]
    load_col = dict(config["load_col"] or {})
    for suffix in suffixes:
        load_col[suffix] = [f"{suffix}_id", suffix]
    config["load_col"] = load_col
    config["additional_feat_suffix"] = list(dict.fromkeys(list(config["additional_feat_suffix"] or []) + list(suffixes)))
    user_alias = [field for suffix in ("uemb", "unbr") if suffix in suffixes
                  for field in ([f"{suffix}_id"] + ([suffix] if suffix == "unbr" else []))]
    item_alias = [field for suffix in ("iemb", "inbr") if suffix in suffixes
                  for field in ([f"{suffix}_id"] + ([suffix] if suffix == "inbr" else []))]
    if user_alias:
        config["alias_of_user_id"] = list(dict.fromkeys(list(config["alias_of_user_id"] or []) + user_alias))
    if item_alias:
        config["alias_of_item_id"] = list(dict.fromkeys(list(config["alias_of_item_id"] or []) + item_alias))
    preload = dict(config["preload_weight"] or {})
    for suffix in ("uemb", "iemb"):
        if suffix in suffixes:
            preload[f"{suffix}_id"] = suffix
    config["preload_weight"] = preload or None
    return manifest
