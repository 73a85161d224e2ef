"""What training did to the item embeddings, per popularity group: a diagnostic for trained checkpoints.

    python benchmarks/embeddings.py --dataset=Amazon_Office --data_path=/tmp/data --k=10 \\
        --checkpoint SASRec=saved/SASRec-seed2024.pth --checkpoint SRACL=saved/SRACL-seed2024.pth

For every checkpoint written by recbole_sracl's trainer (any model whose item embedding table is
``...item_embedding.weight``; SASRec, GRU4Rec, DuoRec, CL4SRec and SRACL tie it to the output layer, so it is
also what the scores are made of) and every group of items by training popularity (default bounds ``[6, 21]``,
the groups of ``group_by_target_popularity``), it reports

- ``norm``: mean L2 norm of the item vectors (with dot-product scores, a longer vector is scored higher);
- ``neighbour_cosine``: mean cosine between an item and its first ``k`` semantic neighbours (``.inbr``), the
  items SRA-CL's L_IS substitutes for it;
- ``random_cosine``: the same for ``k`` random items per item (seeded, the same for every checkpoint): the
  baseline, as trained embedding tables are not isotropic;
- ``neighbour_norm_ratio``: mean ``||e_v'|| / ||e_v||`` over the neighbours v' of v (> 1: the neighbours are
  scored higher than v along the same direction);

and, on the test split scored as RecBole's full ranking scores it (``test_targets``, grouped by the test item's
training popularity): the share of the test item's semantic neighbours scored above it, the share of users with
at least one neighbour above it, and the share of each popularity group's items scored above it.

Items are matched across checkpoints by their token, so models trained with and without semantic files (which may
number items differently) are comparable. Popularity counts the training split only (leave-one-out by time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

# config keys taken over from a checkpoint's run: the ones that decide which semantic files a model registers (hence
# how RecBole numbers the items) and the ones that decide the shapes of its weights
RUN_KEYS = ("backbone", "alpha", "beta", "k", "substitution_pool", "user_granularity", "MAX_ITEM_LIST_LENGTH",
            "hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads", "num_layers")


def item_embedding_table(state_dict: dict[str, Any]) -> np.ndarray:
    """The ``[n_items, d]`` item embedding matrix of a model's state dict (row 0 = padding).

    Raises:
        SystemExit: no or several ``item_embedding.weight`` entries.
    """
    keys = [key for key in state_dict if key.endswith("item_embedding.weight")]
    if len(keys) != 1:
        raise SystemExit(f"expected one '...item_embedding.weight' in the checkpoint, found {keys or 'none'}")
    return state_dict[keys[0]].detach().cpu().numpy().astype(np.float64)


def _row_means(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of each row over its ``valid`` entries; NaN for a row without any."""
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(values), np.nan), where=counts > 0)


def mean_cosine(table: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per row i: mean cosine between ``table[i]`` and ``table[others[i, j]]`` over ``others >= 0`` (NaN if none)."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    valid = others >= 0
    return _row_means(np.einsum("id,ijd->ij", unit, unit[np.where(valid, others, 0)]), valid)


def embedding_report(table: np.ndarray, groups: np.ndarray, neighbours: np.ndarray, random: np.ndarray
                     ) -> dict[str, dict[str, float]]:
    """Per group label: item count and the four measures of the module docstring.

    Args:
        table: ``[n, d]`` item vectors, rows aligned with ``groups``, ``neighbours`` and ``random``.
        groups: ``[n]`` group label per row.
        neighbours, random: ``[n, k]`` row indices of each row's semantic / random neighbours, -1 = none.
            Rows without semantic neighbours are left out of every measure.
    """
    norms = np.linalg.norm(table, axis=1)
    has_neighbours = neighbours >= 0
    semantic_cosine = mean_cosine(table, neighbours)
    random_cosine = mean_cosine(table, random)
    ratio = _row_means(norms[np.where(has_neighbours, neighbours, 0)], has_neighbours) / np.maximum(norms, 1e-12)
    report = {}
    for label in dict.fromkeys(groups.tolist()):
        chosen = (groups == label) & has_neighbours.any(axis=1)
        report[label] = {
            "items": int(chosen.sum()),
            "norm": float(norms[chosen].mean()),
            "neighbour_cosine": float(semantic_cosine[chosen].mean()),
            "random_cosine": float(random_cosine[chosen].mean()),
            "neighbour_norm_ratio": float(ratio[chosen].mean()),
        }
    return report


def load_run(checkpoint_config: dict[str, Any], dataset: str, data_path: str, config_files: Sequence[str] | None):
    """``(config, RecBole dataset, training, validation and test splits)`` as the run that wrote the checkpoint built
    them (same item numbering)."""
    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.quick_start import build_config

    overrides = {key: checkpoint_config[key] for key in RUN_KEYS if key in checkpoint_config}
    config = build_config(checkpoint_config["model"], dataset, list(config_files or []), argv=[],
                          config_dict={"data_path": data_path, "semantic_auto_build": [], "use_gpu": False,
                                       **overrides})
    prepare = getattr(config.model_class, "prepare_config", None)
    if prepare is not None:
        prepare(config)
    loaded_dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, loaded_dataset,
                                                         getattr(config.model_class, "build_train_augmenter", None))
    return config, loaded_dataset, train_data, valid_data, test_data


def outranking_neighbours(checkpoint: dict[str, Any], config: Any, train_data: Any, test_data: Any,
                          neighbours: np.ndarray, item_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What is scored above each test item, for every test user whose test item has semantic neighbours.

    Scores as RecBole's full-ranking test does (:func:`recbole_sracl.evaluation.full_sort_test_scores`: padding
    and the user's history at -inf, so an item in the history is never above).

    Args:
        neighbours: ``[n_items, k]`` semantic neighbours per internal item id, -1 = none.
        item_groups: ``[n_items]`` integer group per internal item id (-1 = in no group).

    Returns:
        test items ``[m]``, share of each one's neighbours scored above it ``[m]``, and ``[m, n_groups]`` share
        of each group's items scored above it.
    """
    import torch

    from recbole_sracl.errors import DatasetError
    from recbole_sracl.evaluation import full_sort_test_scores

    model = config.model_class(config, train_data._dataset)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    table, groups = torch.as_tensor(neighbours), torch.as_tensor(item_groups)
    try:
        with torch.no_grad():
            parts = [scored_above(scores, targets, table, groups)
                     for _, scores, targets in full_sort_test_scores(model, test_data)]
    except DatasetError as error:
        raise SystemExit(str(error)) from None
    if not parts:
        raise SystemExit(f"the test split of '{config['dataset']}' is empty: nothing to score")
    return tuple(np.concatenate(columns) for columns in zip(*parts))


def scored_above(scores: Tensor, targets: Tensor, neighbours: Tensor, item_groups: Tensor
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one batch of ``[B, n_items]`` scores with one test item per row (``targets``, ``[B]``): the rows' test
    items, the share of each one's valid neighbours (``neighbours[target] >= 0``) scored strictly above it, and the
    share of each item group's items (``item_groups`` 0..G-1, -1 = none) scored strictly above it; rows whose test
    item has no neighbours are dropped."""
    import torch

    target_scores = scores.gather(1, targets.unsqueeze(1))
    candidates = neighbours[targets]
    valid = candidates >= 0
    keep = valid.any(dim=1)
    above = (scores.gather(1, candidates.clamp(min=0)) > target_scores) & valid
    membership = torch.stack([item_groups == group for group in range(int(item_groups.max()) + 1)]).float()
    higher = (scores > target_scores).float()
    return (targets[keep].numpy(), (above.sum(dim=1)[keep] / valid.sum(dim=1)[keep]).numpy(),
            (higher[keep] @ membership.T / membership.sum(dim=1)).numpy())


def compare_checkpoints(checkpoints: dict[str, Path], dataset: str, data_path: Path, k: int,
                        bounds: Sequence[int], seed: int = 0, config_files: Sequence[str] | None = None
                        ) -> dict[str, Any]:
    """The report for several named checkpoints trained on ``dataset`` (see the module docstring)."""
    from recbole_sracl.benchmark.neighbours import _random_lists, training_histories
    from recbole_sracl.evaluation import group_labels, group_order
    from recbole_sracl.semantic.files import read_neighbour_file
    from recbole_sracl.trainer import load_checkpoint

    loaded = {name: load_checkpoint(path) for name, path in checkpoints.items()}
    for name, checkpoint in loaded.items():
        if "model" not in checkpoint.get("config", {}):
            raise SystemExit(f"{checkpoints[name]}: not a recbole_sracl checkpoint (no config.model)")
    field_keys = ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD")
    fields = next(iter(loaded.values()))["config"]
    for name, checkpoint in loaded.items():
        differing = [key for key in field_keys if checkpoint["config"].get(key) != fields.get(key)]
        if differing:
            raise SystemExit(f"{checkpoints[name]}: {', '.join(differing)} differ from the first checkpoint's; "
                             f"compare checkpoints trained on the same fields")
    folder = data_path / dataset
    histories, _ = training_histories(folder / f"{dataset}.inter", fields["USER_ID_FIELD"], fields["ITEM_ID_FIELD"],
                                      fields["TIME_FIELD"])
    popularity = Counter(item for items in histories.values() for item in items)
    tokens = sorted(popularity)  # every item of the training split, one row each
    row_of = {token: row for row, token in enumerate(tokens)}
    names, lists = read_neighbour_file(folder / f"{dataset}.inbr", "inbr")

    def index_table(rows_by_token: dict[str, list[str]]) -> np.ndarray:
        table = np.full((len(tokens), k), -1, dtype=np.int64)
        for token, row in rows_by_token.items():
            chosen = [row_of[other] for other in row if other in row_of][:k]
            if token in row_of and chosen:
                table[row_of[token], : len(chosen)] = chosen
        return table

    neighbours = index_table(dict(zip(names, lists)))
    random = index_table(dict(zip(tokens, _random_lists(tokens, tokens, k, np.random.default_rng(seed)))))
    groups = group_labels(np.array([popularity[token] for token in tokens]), bounds)
    group_names = sorted(dict.fromkeys(groups.tolist()), key=group_order)
    report: dict[str, Any] = {"dataset": dataset, "k": k, "popularity_bounds": list(bounds), "seed": seed,
                              "items": len(tokens), "item_groups": group_names, "checkpoints": {}}
    runs: dict[tuple, tuple[Any, Any, Any, Any, Any]] = {}  # one dataset and split per item numbering
    for name, checkpoint in loaded.items():
        saved = checkpoint["config"]
        mapping_key = (saved["model"], *(repr(saved.get(key)) for key in RUN_KEYS))
        if mapping_key not in runs:
            runs[mapping_key] = load_run(saved, dataset, str(data_path), config_files)
        config, loaded_dataset, train_data, _, test_data = runs[mapping_key]
        item_tokens = loaded_dataset.field2id_token[loaded_dataset.iid_field]
        internal = {token: index for index, token in enumerate(item_tokens)}
        missing = [token for token in tokens if token not in internal]
        if missing:
            raise SystemExit(f"{checkpoints[name]}: items {missing[:3]} of the training split are not in the "
                             f"checkpoint's dataset")
        rows = np.array([internal[token] for token in tokens])
        table = item_embedding_table(checkpoint["state_dict"])
        by_group = embedding_report(table[rows], groups, neighbours, random)
        internal_neighbours = np.full((len(item_tokens), k), -1, dtype=np.int64)
        internal_neighbours[rows] = np.where(neighbours >= 0, rows[np.where(neighbours >= 0, neighbours, 0)], -1)
        item_groups = np.full(len(item_tokens), -1, dtype=np.int64)
        item_groups[rows] = [group_names.index(label) for label in groups]
        targets, shares, above = outranking_neighbours(checkpoint, config, train_data, test_data,
                                                       internal_neighbours, item_groups)
        target_groups = group_labels(np.array([popularity.get(item_tokens[item], 0) for item in targets]), bounds)
        outranked = {}
        for label in dict.fromkeys(target_groups.tolist()):
            chosen = target_groups == label
            outranked[label] = {"test_users": int(chosen.sum()),
                                "neighbours_above_target": float(shares[chosen].mean()),
                                "any_neighbour_above": float((shares[chosen] > 0).mean()),
                                "items_above_target_by_group": {name: float(above[chosen, index].mean())
                                                                for index, name in enumerate(group_names)}}
        report["checkpoints"][name] = {
            "file": str(checkpoints[name]), "model": saved["model"], "epoch": checkpoint.get("epoch"),
            "groups": {label: by_group[label] for label in sorted(by_group, key=group_order)},
            "test_targets": {label: outranked[label] for label in sorted(outranked, key=group_order)},
        }
    return report


def render(report: dict[str, Any]) -> str:
    """Markdown table: one row per checkpoint and popularity group."""
    lines = [f"Item embeddings by training popularity: {report['dataset']}, first k={report['k']} semantic "
             f"neighbours, {report['items']} items", "",
             "| checkpoint | items seen in training | items | norm | cosine to semantic neighbours | "
             "cosine to random items | neighbour / item norm |", "|---|---|---|---|---|---|---|"]
    for name, entry in report["checkpoints"].items():
        for label, row in entry["groups"].items():
            lines.append(f"| {name} | {label} | {row['items']} | {row['norm']:.3f} | {row['neighbour_cosine']:.3f} | "
                         f"{row['random_cosine']:.3f} | {row['neighbour_norm_ratio']:.3f} |")
    lines += ["", "Test users whose test item's semantic neighbours are scored above it (full ranking, history "
              "masked), by the test item's training popularity", "",
              "| checkpoint | test item seen in training | test users | share of its neighbours above it | "
              f"users with any neighbour above | share of the items seen {' / '.join(report['item_groups'])} times above it |",
              "|---|---|---|---|---|---|"]
    for name, entry in report["checkpoints"].items():
        for label, row in entry["test_targets"].items():
            shares = " / ".join(f"{share:.3f}" for share in row["items_above_target_by_group"].values())
            lines.append(f"| {name} | {label} | {row['test_users']} | {row['neighbours_above_target']:.3f} | "
                         f"{row['any_neighbour_above']:.3f} | {shares} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default="dataset", help="folder holding <dataset>/ (default: dataset)")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a trained checkpoint (best-model .pth), repeatable")
    parser.add_argument("--k", type=int, default=10, help="semantic neighbours per item to compare with (SRACL's k)")
    parser.add_argument("--bounds", type=int, nargs="+", default=[6, 21], help="popularity group bounds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-item baseline")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files the runs were trained with")
    parser.add_argument("--out", default=None, help="also write the report as JSON here (and the table next to it, .md)")
    args = parser.parse_args(argv)
    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--checkpoint expects NAME=PATH to an existing file, got {item!r}")
        checkpoints[name] = Path(path)
    report = compare_checkpoints(checkpoints, args.dataset, Path(args.data_path), args.k, args.bounds, args.seed,
                                 (args.config_files or "").split())
    publish_report(report, render, "benchmarks/embeddings.py", argv, args.out)
    return 0


def publish_report(report: dict[str, Any], render_table: Callable[[dict[str, Any]], str], script: str,
                   argv: Sequence[str] | None, out: str | None) -> None:
    """Stamp ``report`` with its command, time and machine, print its table and, with ``out``, write the report as
    JSON there and the table (with the command) next to it as ``.md``. Shared by the checkpoint diagnostics."""
    from recbole_sracl.quick_start import machine_info

    report["command"] = " ".join([f"python {script}", *(argv if argv is not None else sys.argv[1:])])
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["machine"] = machine_info()
    table = render_table(report)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        path.with_suffix(".md").write_text(f"{table}\n\nCommand: `{report['command']}` ({report['finished_at']}).\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
