"""A tiny synthetic dataset in RecBole atomic format, written by the tests themselves.

60 users, 40 items in 4 product families (pens, paper, ink, desks). Each user mostly buys within one family,
so semantic neighbours are meaningful and every model can learn something in one epoch.
"""

from __future__ import annotations

import random
from pathlib import Path

FAMILIES = {
    "pen": ("Pen", "Writing Instruments, Pens", "Smooth ballpoint pen with blue ink."),
    "paper": ("Paper", "Paper, Copy & Printer Paper", "Bright white letter paper for printers."),
    "ink": ("Ink Cartridge", "Ink & Toner, Inkjet Cartridges", "Replacement inkjet cartridge, black."),
    "desk": ("Desk Organizer", "Desk Accessories, Organizers", "Mesh desk organizer with drawers."),
}
BRANDS = ["Acme", "Bolt", "Crest", "Dyna", "Echo"]


def item_rows(items_per_family: int = 10) -> list[dict[str, str]]:
    rows, item_id = [], 0
    for family, (noun, categories, description) in FAMILIES.items():
        for index in range(items_per_family):
            item_id += 1
            brand = BRANDS[index % len(BRANDS)]
            rows.append({
                "item_id": f"i{item_id}",
                "title": f"{brand} {noun} Model {index + 1}",
                "brand": brand if index % 3 else "",  # some items have no brand: prompts must skip it
                "categories": f"Office Products, {categories}",
                "description": description if index % 4 else "",
                "family": family,
            })
    return rows


def write_tiny_dataset(
    root: str | Path,
    name: str = "tiny",
    users: int = 60,
    seed: int = 0,
    min_len: int = 6,
    max_len: int = 12,
) -> Path:
    """Write ``root/name/name.inter`` and ``.item``; return the dataset folder."""
    rng = random.Random(seed)
    items = item_rows()
    by_family: dict[str, list[dict[str, str]]] = {}
    for row in items:
        by_family.setdefault(row["family"], []).append(row)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    families = list(by_family)
    for user in range(1, users + 1):
        home = families[user % len(families)]
        length = rng.randint(min_len, max_len)
        for position in range(1, length + 1):
            family = home if rng.random() < 0.85 else rng.choice(families)
            item = rng.choice(by_family[family])
            lines.append(f"u{user}\t{item['item_id']}\t{position}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    item_lines = ["item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq\tdescription:token_seq"]
    for row in items:
        item_lines.append("\t".join([row["item_id"], row["title"], row["brand"], row["categories"], row["description"]]))
    (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    return folder


TINY_YAML = """\
load_col:
  inter: [user_id, item_id, timestamp]
  item: [item_id, title, brand, categories, description]
semantic_title_field: title
semantic_item_fields: [title, brand, categories, description]
train_batch_size: 32
eval_batch_size: 64
show_progress: False
"""


def write_tiny_config(path: str | Path) -> Path:
    """A yaml with the tiny dataset's fields and small batches."""
    path = Path(path)
    path.write_text(TINY_YAML, encoding="utf-8")
    return path
