"""Per-user TRAINING histories recovered from RecBole's training split.

RecBole's sequential dataset turns a user's items ``i1..in`` into rows ``(i1 -> i2), (i1 i2 -> i3), ...`` and
the leave-one-out split gives the last row to test and the one before to validation. The training part of
the user is therefore the first item of its first training row followed by the targets of all its training
rows, in order: exactly the items the model is trained on, never a validation or test item.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch


def training_histories(train_dataset: Any) -> dict[int, np.ndarray]:
    """``{internal user id: internal item ids of the user's training part, oldest first}``."""
    features = train_dataset.inter_feat
    config = train_dataset.config
    users = features[train_dataset.uid_field].numpy()
    targets = features[train_dataset.iid_field].numpy()
    first_items = features[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]][:, 0].numpy()
    order = np.argsort(users, kind="stable")  # rows of a user are already chronological; keep that order
    users, targets, first_items = users[order], targets[order], first_items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {
        int(users[start]): np.concatenate([first_items[start:start + 1], targets[start:end]])
        for start, end in zip(starts, ends)
    }


def buyers_by_item(histories: Mapping[Hashable, Iterable[Hashable]]) -> dict[Hashable, list[Hashable]]:
    """``{item: the users whose history holds it, each once, in the order of histories}`` from ``{user: items}``.

    Turns histories around so that item co-occurrence code scores users by shared items (SRACL's
    ``user_pool: cooccurrence``, with internal ids; ``benchmarks/neighbours.py``, with tokens).
    """
    by_item: dict[Hashable, list[Hashable]] = {}
    for user, items in histories.items():
        for item in dict.fromkeys(np.asarray(items).tolist()):
            by_item.setdefault(item, []).append(user)
    return by_item


USER_GRANULARITIES = ("user", "prefix")  # what SRA-CL's cross-sequence loss retrieves over (``user_granularity``)


def training_prefix_lengths(train_dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """The user and the prefix length (items before the target, untruncated) of every training row, in row order.

    A user's ``j``-th training row (0-based, chronological) predicts item ``j + 2`` of its training part from the
    first ``j + 1`` items, so its prefix length is ``j + 1`` whatever ``MAX_ITEM_LIST_LENGTH`` cuts the input to.
    """
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    lengths = np.empty(len(users), dtype=np.int64)
    lengths[order] = rank + 1
    return users, lengths


def prefix_token(user_token: str, length: int) -> str:
    """The id of a training prefix in the prefix semantic files: ``<user token>:<prefix length>``."""
    return f"{user_token}:{length}"


def split_prefix_token(token: str) -> tuple[str, int]:
    """``(user token, prefix length)`` of a :func:`prefix_token` (user tokens may contain ``:`` themselves)."""
    user, _, length = token.rpartition(":")
    return user, int(length)


def training_sequence_table(
    histories: dict[int, np.ndarray], num_users: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's last ``max_length`` training items as a left-aligned ``[num_users, max_length]`` table.

    Returns:
        (sequences, lengths); users without a training part get an empty row and length 0.
    """
    table = np.zeros((num_users, max_length), dtype=np.int64)
    lengths = np.zeros(num_users, dtype=np.int64)
    for user, items in histories.items():
        recent = items[-max_length:]
        table[user, : len(recent)] = recent
        lengths[user] = len(recent)
    return torch.from_numpy(table), torch.from_numpy(lengths)


def neighbour_table(
    dataset: Any, suffix: str, num_rows: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``[num_rows, k]`` neighbour ids (best first, 0 = padding) from a loaded neighbour file.

    The file's id field is ``<suffix>_id`` and its list field ``<suffix>``; RecBole has already mapped both to
    internal ids through ``alias_of_user_id``/``alias_of_item_id``.
    """
    feature = getattr(dataset, f"{suffix}_feat")
    ids = feature[f"{suffix}_id"].long()
    lists = feature[suffix].long()[:, :k]
    table = torch.zeros((num_rows, k), dtype=torch.long)
    table[ids, : lists.size(1)] = lists
    return table, (table > 0).sum(dim=1)
