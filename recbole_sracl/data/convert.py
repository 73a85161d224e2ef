"""Convert raw public datasets into RecBole atomic files.

    python -m recbole_sracl.data.convert amazon --reviews reviews_Office_Products_5.json.gz \\
        --meta meta_Office_Products.json.gz --out dataset/Amazon_Office

Amazon 2014 (McAuley et al.): ``reviews_<Category>_5.json.gz`` holds one JSON review per line (reviewerID, asin,
unixReviewTime, ...); ``meta_<Category>.json.gz`` holds one Python-literal dict per line (asin, title, brand,
categories, price, salesRank, description). The converter

- applies an iterative k-core filter (default 5: every user and item keeps >= 5 interactions),
- orders each user's interactions by time with a stable sort (ties keep the review file's order, as SRA-CL),
- writes ``timestamp`` as the 1-based position in the user's sequence (``--timestamp=unix`` keeps the real
  times, whose ties RecBole may reorder),
- cleans the item text for RecBole's reader: HTML entities unescaped, tabs/newlines collapsed, ``"`` -> ``''``,
  categories = the first category path joined with ``, ``.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import html
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from recbole_sracl.errors import DatasetError, SRACLError
from recbole_sracl.utils import atomic_write

ITEM_FIELDS = [
    ("title", "token_seq"), ("brand", "token"), ("categories", "token_seq"), ("price", "float"),
    ("sales_type", "token"), ("sales_rank", "float"), ("description", "token_seq"),
]


def _open(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path} not found (download the Amazon 2014 files: see README 'Amazon raw files')")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_records(path: Path, what: str) -> Iterator[dict[str, Any]]:
    """One dict per line; JSON first, Python literal (the 2014 metadata format) second."""
    with _open(path) as handle:
        for number, line in enumerate(tqdm(handle, desc=f"read {what}", unit=" lines", mininterval=2), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                try:
                    record = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DatasetError(f"{path}, line {number}: neither JSON nor a Python dict literal") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}, line {number}: expected one object per line")
            yield record


def clean(value: Any) -> str:
    """Text safe for RecBole's reader: unescaped, one line, no tabs, no double quotes."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(part) for part in value)
    text = html.unescape(html.unescape(str(value)))
    return " ".join(text.replace('"', "''").split())


def k_core(interactions: list[tuple[str, str, int, int]], core: int) -> list[tuple[str, str, int, int]]:
    """Drop users and items with fewer than ``core`` interactions until none is left."""
    while True:
        users = Counter(user for user, _, _, _ in interactions)
        items = Counter(item for _, item, _, _ in interactions)
        kept = [row for row in interactions if users[row[0]] >= core and items[row[1]] >= core]
        if len(kept) == len(interactions):
            return kept
        interactions = kept


def item_row(meta: dict[str, Any]) -> dict[str, str]:
    categories = meta.get("categories") or []
    first_path = categories[0] if categories and isinstance(categories[0], (list, tuple)) else categories
    sales = meta.get("salesRank") or {}
    sales_type, sales_rank = (next(iter(sales.items())) if isinstance(sales, dict) and sales else ("", ""))
    price = meta.get("price")
    return {
        "title": clean(meta.get("title")),
        "brand": clean(meta.get("brand")),
        "categories": ", ".join(clean(part) for part in first_path if clean(part)),
        "price": "" if price in (None, "") else clean(price),
        "sales_type": clean(sales_type),
        "sales_rank": "" if sales_rank in (None, "") else clean(sales_rank),
        "description": clean(meta.get("description")),
    }


def convert_amazon(reviews: Path, meta: Path | None, out: Path, name: str | None = None, core: int = 5,
                   timestamp: str = "position") -> dict[str, int]:
    """Write ``<out>/<name>.inter`` and ``<out>/<name>.item``; returns the counts."""
    name = name or out.name
    interactions = []
    for order, review in enumerate(read_records(reviews, "reviews")):
        try:
            interactions.append((str(review["reviewerID"]), str(review["asin"]), int(review["unixReviewTime"]), order))
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{reviews}: review #{order + 1} lacks reviewerID, asin or unixReviewTime") from None
    interactions = k_core(interactions, core)
    if not interactions:
        raise DatasetError(f"nothing is left after the {core}-core filter of {reviews}")
    interactions.sort(key=lambda row: (row[0], row[2], row[3]))  # per user: time, then file order
    lines, position, previous = ["user_id:token\titem_id:token\ttimestamp:float"], 0, None
    for user, item, unix, _ in interactions:
        position = position + 1 if user == previous else 1
        previous = user
        lines.append(f"{user}\t{item}\t{position if timestamp == 'position' else unix}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{name}.inter", lambda handle: handle.write("\n".join(lines) + "\n"))
    items = sorted({item for _, item, _, _ in interactions})
    counts = {"users": len({row[0] for row in interactions}), "items": len(items), "interactions": len(interactions)}
    if meta is not None:
        wanted, rows = set(items), {}
        for record in read_records(meta, "metadata"):
            asin = str(record.get("asin", ""))
            if asin in wanted:
                rows[asin] = item_row(record)
        header = "\t".join(["item_id:token"] + [f"{field}:{kind}" for field, kind in ITEM_FIELDS])
        body = ["\t".join([item] + [rows.get(item, {}).get(field, "") for field, _ in ITEM_FIELDS]) for item in items]
        atomic_write(out / f"{name}.item", lambda handle: handle.write("\n".join([header] + body) + "\n"))
        counts["items_with_metadata"] = len(rows)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_sracl.data.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sources = parser.add_subparsers(dest="source", required=True)
    amazon = sources.add_parser("amazon", help="Amazon 2014 reviews_*_5.json.gz + meta_*.json.gz")
    amazon.add_argument("--reviews", required=True, type=Path)
    amazon.add_argument("--meta", type=Path, default=None)
    amazon.add_argument("--out", required=True, type=Path, help="dataset folder, e.g. dataset/Amazon_Office")
    amazon.add_argument("--name", default=None, help="dataset name (default: the --out folder's name)")
    amazon.add_argument("--core", type=int, default=5)
    amazon.add_argument("--timestamp", choices=["position", "unix"], default="position")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        counts = convert_amazon(args.reviews, args.meta, args.out, args.name, args.core, args.timestamp)
    except SRACLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{value} {key}" for key, value in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
