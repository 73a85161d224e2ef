"""Finding, checking, loading and splitting datasets; the augmenting training data loader.

Replaces ``recbole.data.create_dataset``/``data_preparation`` because those read pickles back
(``save_dataset``/``save_dataloaders``) and know nothing of train-time augmenters.
"""

from __future__ import annotations

import importlib
import shutil
from logging import getLogger
from pathlib import Path
from typing import Any

import numpy as np
from recbole.data.dataloader import TrainDataLoader
from recbole.data.utils import create_samplers, get_dataloader
from recbole.utils import ModelType, set_color

from recbole_sracl.data.augmenters import Augmenter
from recbole_sracl.errors import ConfigError, DatasetError

BUNDLED_DATASETS = ("ml-100k",)


def dataset_dir(config: Any) -> Path:
    """The folder holding the atomic files of ``config['dataset']`` (``data_path``/``dataset``)."""
    return Path(config["data_path"])


def ensure_dataset_files(config: Any) -> Path:
    """Make sure ``<dataset>.inter`` exists; copy the ml-100k that ships inside recbole on first use.

    Raises:
        DatasetError: the dataset is missing, naming where we looked and how to provide it.
    """
    folder, name = dataset_dir(config), config["dataset"]
    inter = folder / f"{name}.inter"
    if inter.is_file():
        return folder
    if name in BUNDLED_DATASETS:
        import recbole

        bundled = Path(recbole.__file__).parent / "dataset_example" / name
        folder.mkdir(parents=True, exist_ok=True)
        for source in sorted(bundled.glob(f"{name}.*")):
            if not (folder / source.name).exists():
                shutil.copyfile(source, folder / source.name)
        getLogger(__name__).info(f"copied the {name} dataset bundled with recbole into {folder}")
        return folder
    raise DatasetError(
        f"dataset '{name}' not found: looked for {inter}. Put RecBole atomic files ({name}.inter, optionally "
        f"{name}.item) in {folder}/, or pass --data_path=FOLDER where FOLDER/{name}/ holds them "
        f"(README: 'Your own data'; Amazon raw files: python -m recbole_sracl.data.convert amazon --help)."
    )


def read_atomic_header(path: Path, separator: str = "\t") -> dict[str, str]:
    """``{field: type}`` from the first line of an atomic file.

    Raises:
        DatasetError: the header is empty or a column is not ``name:type``.
    """
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\r\n")
    if not header:
        raise DatasetError(f"{path} is empty; atomic files start with a header such as 'user_id:token'")
    fields = {}
    for column in header.split(separator):
        name, sep, ftype = column.partition(":")
        if not sep or ftype not in {"token", "token_seq", "float", "float_seq"}:
            raise DatasetError(
                f"{path}: header column '{column}' is not name:type with type token, token_seq, float or float_seq"
            )
        fields[name] = ftype
    return fields


def check_atomic_fields(config: Any) -> None:
    """Check that every file and field the config asks RecBole to load exists, before RecBole reads anything.

    Raises:
        DatasetError: a file named by ``load_col``/``additional_feat_suffix`` or one of its fields is missing.
    """
    folder, name = dataset_dir(config), config["dataset"]
    load_col = config["load_col"] or {}
    if not isinstance(load_col, dict):
        raise ConfigError(f"load_col must map file suffixes to field lists, got {load_col!r}")
    required = {
        "inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]
        + ([config["TIME_FIELD"]] if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else []),
    }
    suffixes = set(load_col) | {"inter"}
    optional = {"item", "user"} - set(load_col)
    additional = set(config["additional_feat_suffix"] or [])
    for suffix in sorted(suffixes - optional):
        path = folder / f"{name}.{suffix}"
        if suffix not in {"inter", "item", "user"} and suffix not in additional:
            continue  # RecBole loads extra files only when additional_feat_suffix names them
        if not path.is_file():
            raise DatasetError(
                f"{path} not found, but load_col lists '{suffix}' fields; add the file or remove "
                f"'{suffix}' from load_col"
            )
        header = read_atomic_header(path, config["field_separator"] or "\t")
        wanted = list(load_col.get(suffix) or []) + required.get(suffix, [])
        missing = [field for field in dict.fromkeys(wanted) if field not in header]
        if missing:
            raise DatasetError(
                f"{path} has no field(s) {', '.join(missing)} (its header has: {', '.join(header)}); "
                f"fix the file header or load_col/USER_ID_FIELD/ITEM_ID_FIELD/TIME_FIELD in the dataset yaml"
            )


def create_dataset(config: Any):
    """Build the RecBole dataset for ``config`` (fresh every time; no pickles are read).

    Raises:
        ConfigError: ``save_dataset``/``save_dataloaders`` is on.
        DatasetError: files are missing, malformed, or users have too few interactions.
    """
    for key in ("save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path"):
        if config[key]:
            raise ConfigError(
                f"{key} is set, but RecBole stores datasets/dataloaders as pickles and recbole_sracl never reads "
                f"pickles back; remove {key} (building the dataset again is fast)"
            )
    ensure_dataset_files(config)
    check_atomic_fields(config)
    module = importlib.import_module("recbole.data.dataset")
    dataset_class = getattr(module, f"{config['model']}Dataset", None)
    if dataset_class is None:
        dataset_class = getattr(
            module,
            {
                ModelType.SEQUENTIAL: "SequentialDataset",
                ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
            }.get(config["MODEL_TYPE"], "Dataset"),
        )
    try:
        dataset = dataset_class(config)
    except (UnicodeDecodeError, ValueError) as error:
        import pandas as pd

        if isinstance(error, (UnicodeDecodeError, pd.errors.ParserError)) or "not supported" in str(error):
            raise DatasetError(f"cannot read the atomic files in {dataset_dir(config)}: {error}") from None
        raise
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        check_min_interactions(dataset, config)
    return dataset


def check_min_interactions(dataset: Any, config: Any) -> None:
    """Leave-one-out needs ``min_user_interactions`` (default 3) interactions per user.

    Raises:
        DatasetError: some users have fewer, naming one and the filter that fixes it.
    """
    minimum = int(config["min_user_interactions"] or 0)
    if minimum <= 0:
        return
    uid_field = dataset.uid_field
    # called before dataset.build(), so inter_feat still holds one row per interaction
    ids, counts = np.unique(np.asarray(dataset.inter_feat[uid_field]), return_counts=True)
    short = np.flatnonzero(counts < minimum)
    if len(short):
        example = dataset.id2token(uid_field, ids[short[:1]])[0]
        raise DatasetError(
            f"{len(short)} user(s) of '{config['dataset']}' have fewer than {minimum} interactions (e.g. user "
            f"'{example}' has {counts[short[0]]}), but leave-one-out needs {minimum}: add "
            f"user_inter_num_interval: \"[{minimum},inf)\" to the dataset yaml (or a --config_files yaml) to drop them"
        )


class AugmentingTrainDataLoader(TrainDataLoader):
    """RecBole's ``TrainDataLoader`` that runs a train-time augmenter on each batch.

    The augmenter sees the batch after RecBole's ``transform`` and before negative sampling, together with the
    batch's row indices into the training dataset.
    """

    def __init__(self, config, dataset, sampler, shuffle: bool = False, augmenter: Augmenter | None = None):
        self.augmenter = augmenter
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        rows = np.array(index)
        batch = self.transform(self._dataset, self._dataset[rows])
        if self.augmenter is not None:
            batch = self.augmenter(batch, rows)
        return self._neg_sampling(batch)


def data_preparation(config: Any, dataset: Any, augmenter_factory=None):
    """Split ``dataset`` and build the train/valid/test loaders; the train loader gets the model's augmenter.

    Args:
        augmenter_factory: ``callable(config, train_dataset) -> Augmenter | None`` (a model's
            ``build_train_augmenter``), or ``None``.
    """
    train_dataset, valid_dataset, test_dataset = built = dataset.build()
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        raise ConfigError("knowledge-aware models are not supported by recbole_sracl's runner; use RecBole's")
    augmenter = augmenter_factory(config, train_dataset) if augmenter_factory else None
    train_data = AugmentingTrainDataLoader(
        config, train_dataset, train_sampler, shuffle=config["shuffle"], augmenter=augmenter
    )
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    logger = getLogger()
    logger.info(
        set_color("[Training]: ", "pink") + set_color("train_batch_size", "cyan") + " = "
        + set_color(f"[{config['train_batch_size']}]", "yellow")
        + (f", augmenter: {type(augmenter).__name__}" if augmenter else "")
    )
    logger.info(
        set_color("[Evaluation]: ", "pink") + set_color("eval_batch_size", "cyan") + " = "
        + set_color(f"[{config['eval_batch_size']}]", "yellow") + set_color(" eval_args", "cyan") + ": "
        + set_color(f"[{config['eval_args']}]", "yellow")
    )
    return train_data, valid_data, test_data
