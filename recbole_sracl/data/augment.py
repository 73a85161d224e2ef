"""Sequence augmentations as pure functions on whole batches.

Every function takes a batch of left-aligned sequences ``item_seq`` (``[B, L]``, items at positions
``0 .. len-1``, zeros after) with lengths ``item_len`` (``[B]``) and an explicit ``torch.Generator``, and
returns NEW tensors; inputs are never modified. They run in the training data loader only (see
:mod:`recbole_sracl.data.augmenters`), never in RecBole's ``transform``, which also runs at evaluation.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

Tensor = torch.Tensor


def _positions(item_seq: Tensor) -> Tensor:
    return torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float64) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype)


def crop(item_seq: Tensor, item_len: Tensor, eta: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Keep ``max(1, floor(eta * len))`` consecutive items starting at a uniform random offset (CL4SRec)."""
    keep = torch.clamp(torch.floor(item_len.double() * eta).long(), min=1)
    keep = torch.minimum(keep, item_len.clamp(min=1))
    span = (item_len - keep + 1).clamp(min=1)
    begin = torch.floor(_uniform(item_len.shape, generator) * span).long()
    positions = _positions(item_seq)
    source = (begin.unsqueeze(1) + positions).clamp(max=item_seq.size(1) - 1)
    cropped = torch.where(positions < keep.unsqueeze(1), item_seq.gather(1, source), torch.zeros_like(item_seq))
    return cropped, keep


def mask(
    item_seq: Tensor, item_len: Tensor, gamma: float, mask_token: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Replace ``floor(gamma * len)`` distinct random items by ``mask_token`` (CL4SRec)."""
    count = torch.floor(item_len.double() * gamma).long()
    positions = _positions(item_seq)
    keys = _uniform(tuple(item_seq.shape), generator)
    keys = torch.where(positions < item_len.unsqueeze(1), keys, torch.full_like(keys, 2.0))
    rank = keys.argsort(dim=1).argsort(dim=1)
    masked = torch.where(rank < count.unsqueeze(1), torch.full_like(item_seq, mask_token), item_seq)
    return masked, item_len.clone()


def reorder(item_seq: Tensor, item_len: Tensor, beta: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffle ``floor(beta * len)`` consecutive items starting at a uniform random offset (CL4SRec)."""
    count = torch.floor(item_len.double() * beta).long()
    span = (item_len - count + 1).clamp(min=1)
    begin = torch.floor(_uniform(item_len.shape, generator) * span).long()
    positions = _positions(item_seq)
    start, stop = begin.unsqueeze(1), (begin + count).unsqueeze(1)
    inside = (positions >= start) & (positions < stop)
    # keys inside the segment lie in [begin, begin + 1), keys outside are the positions themselves,
    # so sorting the keys shuffles the segment and leaves everything else where it was
    keys = torch.where(inside, start.double() + _uniform(tuple(item_seq.shape), generator), positions.double())
    return item_seq.gather(1, keys.argsort(dim=1)), item_len.clone()


def cl4srec_views(
    item_seq: Tensor,
    item_len: Tensor,
    generator: torch.Generator,
    eta: float = 0.6,
    gamma: float = 0.3,
    beta: float = 0.6,
    mask_token: int = 0,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Two CL4SRec views: each row gets two different operators among crop/mask/reorder.

    Rows of length <= 1 are returned unchanged in both views (as in the reference implementation).
    """
    first = torch.randint(0, 3, item_len.shape, generator=generator)
    second = (first + 1 + torch.randint(0, 2, item_len.shape, generator=generator)) % 3
    augmentable = item_len > 1
    views = []
    for operator in (first, second):
        candidates = (
            crop(item_seq, item_len, eta, generator),
            mask(item_seq, item_len, gamma, mask_token, generator),
            reorder(item_seq, item_len, beta, generator),
        )
        seq, length = item_seq.clone(), item_len.clone()
        for index, (cand_seq, cand_len) in enumerate(candidates):
            chosen = augmentable & (operator == index)
            seq = torch.where(chosen.unsqueeze(1), cand_seq, seq)
            length = torch.where(chosen, cand_len, length)
        views.append((seq, length))
    return views[0], views[1]


def substitute(
    item_seq: Tensor,
    item_len: Tensor,
    neighbours: Tensor,
    neighbour_count: Tensor,
    rate: float,
    generator: torch.Generator,
) -> Tensor:
    """SRA-CL semantic substitution: each item is, with probability ``rate``, replaced by one of its neighbours.

    Args:
        neighbours: ``[n_items, k]`` neighbour ids per item, best first, padded with 0.
        neighbour_count: ``[n_items]`` number of valid neighbours per item; items with none are kept.
        rate: replacement probability per item (paper: 0.2).
    """
    positions = _positions(item_seq)
    count = neighbour_count[item_seq]
    replace = (_uniform(tuple(item_seq.shape), generator) < rate) & (positions < item_len.unsqueeze(1)) & (count > 0)
    choice = torch.floor(_uniform(tuple(item_seq.shape), generator) * count.clamp(min=1)).long()
    candidates = neighbours[item_seq, choice.clamp(max=neighbours.size(1) - 1)]
    return torch.where(replace, candidates, item_seq)


def random_pool(n_items: int, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A control for :func:`substitute`: k candidates per item drawn uniformly (with replacement) from the other
    items, in the same ``(neighbours, neighbour_count)`` layout as a semantic neighbour table.

    ``n_items`` counts the padding id 0 (RecBole's ``dataset.item_num``); row 0 stays empty, no row holds itself.
    """
    table = torch.zeros((n_items, k), dtype=torch.long)
    if n_items < 3:  # fewer than two real items: nobody has another item to take
        return table, torch.zeros(n_items, dtype=torch.long)
    items = torch.arange(1, n_items).unsqueeze(1)
    draw = 1 + torch.floor(_uniform((n_items - 1, k), generator) * (n_items - 2)).long()  # 1 .. n_items - 2
    table[1:] = draw + (draw >= items).long()  # skip the item itself
    counts = torch.full((n_items,), k, dtype=torch.long)
    counts[0] = 0
    return table, counts


def cooccurrence_pool(histories: Mapping[int, np.ndarray], n_items: int, k: int, block_rows: int = 1024
                      ) -> tuple[Tensor, Tensor]:
    """A collaborative reference for :func:`substitute`: each item's k items most often bought by the same users.

    Scores are item-item cosine over the binary user x item matrix of ``histories`` (the TRAINING part of each
    user, :func:`recbole_sracl.data.sequences.training_histories`): users who have both items divided by the
    square root of the product of each item's user count. Ties go to the smaller id; items that share no user
    are never candidates, so an item has fewer than k (possibly none) when fewer items co-occur with it. The
    layout is that of a semantic neighbour table: ``([n_items, k] ids, best first, 0 = padding; [n_items] counts)``.
    """
    from scipy import sparse

    table = torch.zeros((n_items, k), dtype=torch.long)
    counts = torch.zeros(n_items, dtype=torch.long)
    users = np.concatenate([np.full(len(items), user) for user, items in histories.items()] or [np.zeros(0)])
    items = np.concatenate(list(histories.values()) or [np.zeros(0)])
    bought = sparse.csr_matrix((np.ones(len(items)), (users.astype(np.int64), items.astype(np.int64))),
                               shape=(int(users.max(initial=0)) + 1, n_items))
    bought.data[:] = 1.0  # a repeated purchase counts once (duplicates were summed)
    together = (bought.T @ bought).tocsr()
    buyers = together.diagonal()
    together = (together - sparse.diags(buyers)).tocsr()  # an item is not its own candidate
    scale = torch.from_numpy(np.divide(1.0, np.sqrt(buyers), out=np.zeros(n_items), where=buyers > 0))
    width = min(k, n_items)
    for start in range(0, n_items, block_rows):
        stop = min(start + block_rows, n_items)
        score = torch.from_numpy(together[start:stop].toarray()) * scale[start:stop, None] * scale[None, :]
        top, order = torch.sort(score, dim=1, descending=True, stable=True)
        valid = top[:, :width] > 0
        table[start:stop, :width] = torch.where(valid, order[:, :width], 0)
        counts[start:stop] = valid.sum(dim=1)
    return table, counts


def sample_same_target(
    rows: Tensor, group_of_row: Tensor, group_start: Tensor, group_size: Tensor, rank_in_group: Tensor,
    order: Tensor, generator: torch.Generator,
) -> Tensor:
    """For each training row, a uniformly drawn OTHER training row with the same target (DuoRec).

    The index is built once by :func:`same_target_index`. Rows whose target occurs once get themselves.
    """
    group = group_of_row[rows]
    size, start, own = group_size[group], group_start[group], rank_in_group[rows]
    draw = torch.floor(_uniform(rows.shape, generator) * (size - 1).clamp(min=1)).long()
    draw = draw + (draw >= own).long()  # skip the row itself
    partner = order[(start + draw).clamp(max=order.numel() - 1)]
    return torch.where(size > 1, partner, rows)


def same_target_index(targets: Tensor) -> dict[str, Tensor]:
    """Vectorised same-target index over training rows: sort rows by target, remember each group's span."""
    order = torch.argsort(targets, stable=True)
    sorted_targets = targets[order]
    unique, group_of_sorted, group_size = torch.unique_consecutive(
        sorted_targets, return_inverse=True, return_counts=True
    )
    group_start = torch.cumsum(group_size, 0) - group_size
    group_of_row = torch.empty_like(group_of_sorted)
    group_of_row[order] = group_of_sorted
    rank_in_group = torch.empty_like(order)
    rank_in_group[order] = torch.arange(order.numel()) - group_start[group_of_sorted]
    return {
        "group_of_row": group_of_row, "group_start": group_start, "group_size": group_size,
        "rank_in_group": rank_in_group, "order": order,
    }
