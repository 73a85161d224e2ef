"""Test metrics per user group (the paper's Figure 7) and per popularity group of the test item.

RecBole reports one number per metric over all test users. ``test_result_by_group`` re-scores the test split with
the loaded (best) model exactly as RecBole's full-ranking evaluation does (same scores, same history mask, same
``torch.topk``), keeps the rank of each user's test item and splits Hit / NDCG / MRR by

- ``sequence_length``: the user's number of interactions (training part + validation + test item), bounds from
  ``group_by_sequence_length`` (default ``[7, 11]``: the paper's groups <7, 7-10, >10);
- ``target_popularity``: how often the test item occurs in the training split, bounds from
  ``group_by_target_popularity`` (default ``[6, 21]``: <=5, 6-20, >20).

The user-weighted mean over the groups of one grouping equals RecBole's overall test result.

``valid_metric_average: popularity_groups`` selects models on :func:`group_balanced_score` instead: the unweighted
mean of ``valid_metric`` over the ``target_popularity`` groups of the validation split, so that users whose target is
a rare item weigh as much as those whose target is a popular one. The trainer computes it every validation from the
top-k hits RecBole's own evaluation has just collected (:func:`first_hit_ranks`), without ranking the split again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

GROUP_METRICS = ("hit", "ndcg", "mrr")  # metrics that depend only on the rank of a single test item
GROUPINGS = ("sequence_length", "target_popularity")  # config keys group_by_<name>
VALID_AVERAGES = ("users", "popularity_groups")  # values of valid_metric_average


def _increasing_integers(bounds: Any) -> bool:
    """Whether ``bounds`` is a non-empty list of integers, each larger than the one before."""
    return (isinstance(bounds, (list, tuple)) and len(bounds) > 0
            and all(isinstance(bound, int) and not isinstance(bound, bool) for bound in bounds)
            and all(low < high for low, high in zip(bounds, bounds[1:])))


def check_group_config(config: Any) -> None:
    """Refuse, before any training, ``group_by_*`` values that are not empty or strictly increasing integer lists
    and a ``valid_metric_average`` that cannot be computed."""
    from recbole_sracl.errors import ConfigError

    for name in GROUPINGS:
        bounds = config[f"group_by_{name}"]
        if bounds is None or (isinstance(bounds, (list, tuple)) and not bounds):
            continue
        if not _increasing_integers(bounds):
            raise ConfigError(f"group_by_{name} must be a strictly increasing list of integers such as [7, 11] "
                              f"(or [] for no groups), not {bounds!r}")
    average = valid_metric_average(config)
    if average not in VALID_AVERAGES:
        raise ConfigError(f"valid_metric_average must be one of {', '.join(VALID_AVERAGES)}, not {average!r}")
    if average == "users":
        return
    fix = "or set valid_metric_average: users"
    if not config["group_by_target_popularity"]:
        raise ConfigError(f"valid_metric_average: popularity_groups needs the groups of group_by_target_popularity "
                          f"(e.g. [6, 21]), which is empty; set it {fix}")
    metric = str(config["valid_metric"]).lower()
    if "@" not in metric or metric.split("@")[0] not in GROUP_METRICS:
        raise ConfigError(f"valid_metric_average: popularity_groups works with valid_metric "
                          f"{' / '.join(m.upper() if m == 'mrr' else m.capitalize() for m in GROUP_METRICS)}@k, "
                          f"not {config['valid_metric']}; change valid_metric {fix}")
    mode = config["eval_args"]["mode"]
    valid_mode = mode.get("valid") if isinstance(mode, dict) else mode
    if valid_mode != "full":
        raise ConfigError(f"valid_metric_average: popularity_groups needs full-ranking validation (eval_args mode "
                          f"'full'), not {valid_mode!r}; {fix}")
    if not config["single_spec"]:
        raise ConfigError(f"valid_metric_average: popularity_groups is not supported in multi-process training "
                          f"(each process sees part of the validation split); train in one process {fix}")


def group_labels(values: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    """Label each value by the half-open interval of ``bounds`` it falls in: ``<b0``, ``b0-(b1-1)``, ..., ``>(bn-1)``.

    >>> group_labels(np.array([3, 7, 10, 11]), [7, 11]).tolist()
    ['<7', '7-10', '7-10', '>10']
    """
    bounds = [int(bound) for bound in bounds]
    if not _increasing_integers(bounds):
        raise ValueError(f"group bounds must be a non-empty, strictly increasing list of integers, not {bounds}")
    names = [f"<{bounds[0]}"]
    for low, high in zip(bounds, bounds[1:]):
        names.append(str(low) if high == low + 1 else f"{low}-{high - 1}")
    names.append(f">{bounds[-1] - 1}")
    return np.array(names, dtype=object)[np.searchsorted(np.array(bounds), np.asarray(values), side="right")]


def group_order(label: str) -> float:
    """Sort key that puts :func:`group_labels` labels in interval order (JSON files store them sorted by name)."""
    if label.startswith("<"):
        return float("-inf")
    if label.startswith(">"):
        return float(label[1:]) + 1
    return float(label.split("-")[0])


def metrics_by_group(ranks: np.ndarray, labels: np.ndarray, metrics: Sequence[str], ks: Sequence[int]) -> dict:
    """``{label: {"users": n, "<metric>@<k>": mean}}`` for single-item ranks (0 = first; >= max(ks) = not in top k).

    Groups appear in the order in which their labels first occur.
    """
    ranks, labels = np.asarray(ranks), np.asarray(labels, dtype=object)
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(labels.tolist()):
        group = ranks[labels == label]
        row: dict[str, float] = {"users": int(group.size)}
        for metric in metrics:
            for k in ks:
                inside = group < k
                if metric == "hit":
                    values = inside.astype(float)
                elif metric == "ndcg":
                    values = np.where(inside, 1.0 / np.log2(group + 2.0), 0.0)
                else:
                    values = np.where(inside, 1.0 / (group + 1.0), 0.0)
                row[f"{metric}@{k}"] = float(values.mean())
        out[label] = row
    return out


def balanced_mean(groups: dict[str, dict[str, float]], key: str) -> float:
    """Unweighted mean of ``key`` over ``groups`` (:func:`metrics_by_group` rows): each group counts once,
    whatever its number of users."""
    return float(np.mean([row[key] for row in groups.values()]))


def one_target_per_row(interaction: Any, positive_u: Tensor) -> bool:
    """Whether a full-ranking batch has exactly one target per row (row ``i``'s target is ``positive_i[i]``)."""
    import torch

    return torch.equal(positive_u.cpu(), torch.arange(len(interaction)))


def first_hit_ranks(hits: np.ndarray) -> np.ndarray:
    """Rank of each row's single target from its top-``k`` hit matrix (``[rows, k]``, true where the item at that
    position is the target): 0 = first, ``k`` = not in the top ``k``.

    >>> first_hit_ranks(np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])).tolist()
    [1, 3, 0]
    """
    hits = np.asarray(hits) > 0
    return np.where(hits.any(axis=1), hits.argmax(axis=1), hits.shape[1])


def full_sort_test_scores(model: Any, test_data: Any, device: Any = "cpu") -> Iterator[tuple[Any, Tensor, Tensor]]:
    """Per batch of a full-ranking split: ``(interaction, [B, n_items] scores, test item of each row)``.

    Scores as RecBole's ``Trainer._full_sort_batch_eval`` does: ``model.full_sort_predict``, then the padding item
    and each user's history set to -inf (never ranked above the test item). Call it with ``model.eval()`` under
    ``torch.no_grad()``.

    Raises:
        DatasetError: a batch whose rows do not have exactly one test item each (e.g. ratio splits).
        NotImplementedError: the model has no ``full_sort_predict``.
    """
    from recbole_sracl.errors import DatasetError

    for interaction, history_index, positive_u, positive_i in test_data:
        if not one_target_per_row(interaction, positive_u):
            raise DatasetError("the test split must have exactly one test item per user (leave-one-out)")
        scores = model.full_sort_predict(interaction.to(device)).view(len(interaction), -1)
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        yield interaction, scores, positive_i.to(scores.device)


def test_item_ranks(model: Any, test_data: Any, max_k: int, device: Any = "cpu"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(users, test items, ranks)`` of every test row, scored by :func:`full_sort_test_scores` and ranked by
    ``torch.topk`` as RecBole's full-ranking metrics rank them (rank ``max_k`` = not in the top ``max_k``).

    ``None`` when the split is not full-ranking with exactly one test item per user (e.g. ratio splits) or the
    model has no ``full_sort_predict``.
    """
    from logging import getLogger

    import torch
    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    from recbole_sracl.errors import DatasetError

    skipped = "no per-group test metrics: "
    if not isinstance(test_data, FullSortEvalDataLoader):
        getLogger(__name__).info(skipped + "the test split is not full-ranking (eval_args mode 'full')")
        return None
    uid_field = test_data._dataset.uid_field
    model.eval()
    users, items, ranks = [], [], []
    try:
        with torch.no_grad():
            for interaction, scores, targets in full_sort_test_scores(model, test_data, device):
                _, top = torch.topk(scores, max_k, dim=-1)
                users.append(interaction[uid_field].cpu().numpy())
                items.append(targets.cpu().numpy())
                ranks.append(first_hit_ranks((top == targets.unsqueeze(1)).cpu().numpy()))
    except DatasetError as error:
        getLogger(__name__).info(skipped + str(error))
        return None
    except NotImplementedError:
        getLogger(__name__).info(skipped + f"{type(model).__name__} has no full_sort_predict")
        return None
    return np.concatenate(users), np.concatenate(items), np.concatenate(ranks)


def item_popularity(histories: dict[int, np.ndarray], item_num: int) -> np.ndarray:
    """How often each item id occurs in the training histories (``training_histories``), indexed by item id."""
    return np.bincount(np.concatenate(list(histories.values())), minlength=item_num)


def valid_metric_average(config: Any) -> str:
    """The configured ``valid_metric_average`` (``users`` when unset)."""
    return config["valid_metric_average"] or "users"


def split_targets(eval_data: Any) -> np.ndarray:
    """The target item of every row of a full-ranking split, in the order RecBole's evaluation collects its rows.

    Raises:
        ConfigError: the split is not full-ranking or a row does not have exactly one target (e.g. ratio splits).
    """
    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    from recbole_sracl.errors import ConfigError

    fix = "set valid_metric_average: users"
    if not isinstance(eval_data, FullSortEvalDataLoader):
        raise ConfigError(f"valid_metric_average: popularity_groups needs a full-ranking validation split; {fix}")
    targets = []
    for interaction, _, positive_u, positive_i in eval_data:
        if not one_target_per_row(interaction, positive_u):
            raise ConfigError("valid_metric_average: popularity_groups needs exactly one validation item per user "
                              f"(leave-one-out splits); {fix}")
        targets.append(positive_i.cpu().numpy())
    return np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)


def group_balanced_score(ranks: np.ndarray, target_popularity: np.ndarray, bounds: Sequence[int], metric: str,
                         decimals: int) -> float:
    """Unweighted mean over the target-popularity groups (``bounds`` as ``group_by_target_popularity``) of the
    per-user mean of ``metric`` (e.g. ``"NDCG@20"``), from each row's target rank and the training popularity of
    its target, rounded to ``decimals`` as RecBole rounds its metrics (``metric_decimal_place``; ties go to the
    later epoch either way).
    """
    name, k = metric.lower().split("@")
    groups = metrics_by_group(ranks, group_labels(target_popularity, bounds), [name], [int(k)])
    return round(balanced_mean(groups, f"{name}@{k}"), decimals)


def test_result_by_group(config: Any, model: Any, train_dataset: Any, test_data: Any,
                         histories: dict[int, np.ndarray] | None = None) -> dict | None:
    """Test metrics per ``sequence_length`` and ``target_popularity`` group of ``model`` (the loaded best model;
    see the module docstring). ``histories``: ``training_histories(train_dataset)`` when the caller has them.

    ``None`` when both bound lists are empty, in multi-process runs, or when the split does not have exactly one
    test item per user.
    """
    from recbole_sracl.data.sequences import training_histories

    groupings = {name: config[f"group_by_{name}"] for name in GROUPINGS}
    groupings = {name: bounds for name, bounds in groupings.items() if bounds}
    metrics = [m.lower() for m in config["metrics"] if m.lower() in GROUP_METRICS]
    ks = list(config["topk"])
    if not groupings or not metrics or not config["single_spec"]:  # distributed ranks see only part of the split
        return None
    scored = test_item_ranks(model, test_data, max(ks), config["device"])
    if scored is None:
        return None
    users, items, ranks = scored
    histories = training_histories(train_dataset) if histories is None else histories
    history_length = np.array([len(histories.get(int(user), ())) for user in users])
    values = {"sequence_length": history_length + 2,
              "target_popularity": item_popularity(histories, train_dataset.item_num)[items]}
    result = {}
    for name, bounds in groupings.items():
        grouped = metrics_by_group(ranks, group_labels(values[name], bounds), metrics, ks)
        result[name] = {label: grouped[label] for label in sorted(grouped, key=group_order)}
    return result
