"""How well the semantic neighbour files agree with the collaborative signal of the training split.

    python benchmarks/neighbours.py --dataset=Amazon_Office --data_path=/tmp/data --k=10

A diagnostic for "why does L_CS / L_IS help or hurt on my data": for the first ``k`` neighbours of every item
and user it reports, next to the same numbers for random neighbours (seeded, same sizes) and for the k most
co-occurring training items or users (SRACL's ``substitution_pool`` / ``user_pool: cooccurrence``):

- items: share of (item, neighbour) pairs that co-occur in some training sequence, and the popularity of a
  substitute relative to the item it replaces, weighted by training interactions (what item substitution sees);
- users: share of (user, neighbour) pairs whose training histories share an item, and share of users whose
  held-out VALIDATION item is in the training history of at least one neighbour (used here only to judge the
  neighbours; training never sees it);
- prefixes (files built with ``--user_granularity=prefix``): share of (prefix, neighbour) pairs from the same
  user, share of pairs whose neighbour prefix contains the item the prefix's training row predicts (its target),
  and shared-item rate.

The split is RecBole's leave-one-out by time: per user, the last interaction is test, the one before is
validation, the rest is training (what the semantic build used).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def training_histories(inter_file: Path, user_field: str, item_field: str, time_field: str
                       ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Per user: training items in time order, and the validation item (leave-one-out by time)."""
    import pandas as pd

    header = inter_file.open(encoding="utf-8").readline().rstrip("\n").split("\t")
    names = {column.split(":")[0]: column for column in header}
    missing = [field for field in (user_field, item_field, time_field) if field not in names]
    if missing:
        raise SystemExit(f"{inter_file}: no column(s) {missing}; header is {header}")
    frame = pd.read_csv(inter_file, sep="\t", dtype={names[user_field]: str, names[item_field]: str},
                        usecols=[names[user_field], names[item_field], names[time_field]])
    frame = frame.rename(columns={names[user_field]: "user", names[item_field]: "item", names[time_field]: "time"})
    frame = frame.sort_values(["user", "time"], kind="stable")
    histories, validation = {}, {}
    for user, items in frame.groupby("user", sort=False)["item"]:
        items = items.tolist()
        if len(items) >= 3:
            histories[user], validation[user] = items[:-2], items[-2]
    return histories, validation


def _random_lists(tokens: list[str], pool: list[str], k: int, rng: np.random.Generator) -> list[list[str]]:
    """k random pool members per token, never the token itself."""
    lists = []
    for token in tokens:
        chosen = [pool[i] for i in rng.choice(len(pool), size=min(k + 1, len(pool)), replace=False)]
        lists.append([other for other in chosen if other != token][:k])
    return lists


def cooccurrence_lists(histories: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Each training item's k most co-occurring items (``substitution_pool: cooccurrence``), by token.

    Given ``{item: users}`` (:func:`recbole_sracl.data.sequences.buyers_by_item`) it gives each user's k users
    sharing most items (``user_pool``).
    """
    from recbole_sracl.data.augment import cooccurrence_pool

    tokens = sorted({item for items in histories.values() for item in items})
    row_of = {token: row for row, token in enumerate(tokens, start=1)}  # 0 is padding
    table, counts = cooccurrence_pool(
        {user: np.array([row_of[item] for item in items]) for user, items in enumerate(histories.values())},
        len(tokens) + 1, k)
    return {token: [tokens[other - 1] for other in table[row, : counts[row]].tolist()]
            for token, row in row_of.items()}


def item_agreement(histories: dict[str, list[str]], neighbours: dict[str, list[str]], k: int) -> dict[str, float]:
    """Co-occurrence rate of (item, neighbour) pairs and the substitutes' relative popularity."""
    together: dict[str, set[str]] = {}
    popularity: dict[str, int] = {}
    for items in histories.values():
        distinct = set(items)
        for item in items:
            popularity[item] = popularity.get(item, 0) + 1
        for item in distinct:
            together.setdefault(item, set()).update(distinct - {item})
    pairs = cooccurring = 0
    weighted_ratio = weight = 0.0
    unseen = 0
    for item, row in neighbours.items():
        row = row[:k]
        if not row:
            continue
        pairs += len(row)
        cooccurring += sum(other in together.get(item, ()) for other in row)
        unseen += sum(popularity.get(other, 0) == 0 for other in row)
        count = popularity.get(item, 0)
        if count:
            weighted_ratio += count * float(np.mean([popularity.get(other, 0) for other in row])) / count
            weight += count
    return {"pairs": pairs, "cooccur_rate": cooccurring / max(pairs, 1),
            "substitute_popularity_ratio": weighted_ratio / max(weight, 1.0),
            "unseen_in_training_rate": unseen / max(pairs, 1)}


def user_agreement(histories: dict[str, list[str]], validation: dict[str, str], neighbours: dict[str, list[str]],
                   k: int) -> dict[str, float]:
    """Shared-item rate of (user, neighbour) pairs and how often a neighbour has the user's next item."""
    sets = {user: set(items) for user, items in histories.items()}
    pairs = sharing = users = found = 0
    for user, row in neighbours.items():
        row = [other for other in row[:k] if other in sets]
        if user not in sets or not row:
            continue
        pairs += len(row)
        sharing += sum(bool(sets[user] & sets[other]) for other in row)
        users += 1
        found += any(validation[user] in sets[other] for other in row)
    return {"pairs": pairs, "shared_item_rate": sharing / max(pairs, 1),
            "next_item_in_a_neighbour_history": found / max(users, 1)}


def prefix_agreement(histories: dict[str, list[str]], neighbours: dict[str, list[str]], k: int) -> dict[str, float]:
    """Same-user rate, target-in-neighbour rate and shared-item rate of (training prefix, neighbour) pairs.

    A prefix ``<user>:<n>`` is the first ``n`` training items of the user; its training row predicts item ``n + 1``.
    """
    from recbole_sracl.data.sequences import split_prefix_token

    def items_of(token: str) -> tuple[str, list[str]]:
        user, length = split_prefix_token(token)
        return user, histories.get(user, [])[:length]

    pairs = same_user = with_target = sharing = 0
    for token, row in neighbours.items():
        user, items = items_of(token)
        history = histories.get(user, [])
        if not items or len(history) <= len(items):
            continue
        target, own = history[len(items)], set(items)
        for other in row[:k]:
            other_user, other_items = items_of(other)
            pairs += 1
            same_user += other_user == user
            with_target += target in other_items
            sharing += bool(own & set(other_items))
    return {"pairs": pairs, "same_user_rate": same_user / max(pairs, 1),
            "target_in_neighbour_rate": with_target / max(pairs, 1), "shared_item_rate": sharing / max(pairs, 1)}


def neighbour_quality(data_root: Path, dataset: str, k: int, seed: int = 0, user_field: str = "user_id",
                      item_field: str = "item_id", time_field: str = "timestamp") -> dict[str, Any]:
    """The report for one dataset folder holding ``<dataset>.inter``, ``.inbr`` and ``.unbr``."""
    from recbole_sracl.data.sequences import buyers_by_item
    from recbole_sracl.semantic.files import read_neighbour_file

    folder = data_root / dataset
    histories, validation = training_histories(folder / f"{dataset}.inter", user_field, item_field, time_field)
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"dataset": dataset, "k": k, "training_users": len(histories), "seed": seed}
    for suffix, kind in (("inbr", "items"), ("unbr", "users"), ("pnbr", "prefixes")):
        path = folder / f"{dataset}.{suffix}"
        if not path.is_file():
            report[kind] = None
            continue
        tokens, lists = read_neighbour_file(path, suffix)
        semantic = dict(zip(tokens, lists))
        if kind == "items":
            pool = sorted({item for items in histories.values() for item in items})
        else:
            pool = sorted(histories) if kind == "users" else tokens
        random = dict(zip(tokens, _random_lists(tokens, pool, k, rng)))
        if kind == "items":
            report[kind] = {"semantic": item_agreement(histories, semantic, k),
                            "random": item_agreement(histories, random, k),
                            "cooccurrence": item_agreement(histories, cooccurrence_lists(histories, k), k)}
        elif kind == "users":
            report[kind] = {"semantic": user_agreement(histories, validation, semantic, k),
                            "random": user_agreement(histories, validation, random, k),
                            "cooccurrence": user_agreement(histories, validation,
                                                           cooccurrence_lists(buyers_by_item(histories), k), k)}
        else:
            report[kind] = {"semantic": prefix_agreement(histories, semantic, k),
                            "random": prefix_agreement(histories, random, k)}
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"Neighbour agreement with the training split: {report['dataset']}, first k={report['k']} neighbours, "
             f"{report['training_users']} users", "", "| measure | semantic | random | cooccurrence |",
             "|---|---|---|---|"]
    for kind in ("items", "users", "prefixes"):
        if not report.get(kind):
            continue
        pools = [report[kind].get(pool) for pool in ("semantic", "random", "cooccurrence")]
        for key in pools[0]:
            if key != "pairs":
                cells = " | ".join("" if pool is None else f"{pool[key]:.4f}" for pool in pools)
                lines.append(f"| {kind}: {key.replace('_', ' ')} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default="dataset", help="folder holding <dataset>/ (default: dataset)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per row to judge (SRACL's k)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-neighbour baseline")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = neighbour_quality(Path(args.data_path), args.dataset, args.k, args.seed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
