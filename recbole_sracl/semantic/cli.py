"""``python -m recbole_sracl.semantic`` — build semantic files, or look at the neighbours they contain.

    python -m recbole_sracl.semantic build --dataset=Amazon_Office --data_path=../shared/datasets
    python -m recbole_sracl.semantic build --dataset=Amazon_Office --llm=openai --llm_model=deepseek-chat \\
        --base_url=https://api.deepseek.com          # key from $OPENAI_API_KEY
    python -m recbole_sracl.semantic build --dataset=Amazon_Office --llm=openai --dry_run
    python -m recbole_sracl.semantic neighbours --dataset=Amazon_Office --item=17 --n=5

Any other ``--key=value`` overrides a yaml property, as in ``run_recbole_sracl.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from recbole_sracl.errors import SRACLError

BUILD_FLAGS = {  # CLI flag -> BuildOptions field
    "llm": str, "llm_model": str, "base_url": str, "api_key_env": str, "encoder": str, "device": str,
    "k": int, "index": str, "concurrency": int, "max_retries": int, "timeout": float, "max_tokens": int,
    "long_text": str,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recbole_sracl.semantic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="prompts -> LLM -> encoder -> faiss top-k -> atomic files")
    build.add_argument("--dataset", required=True)
    build.add_argument("--config_files", default=None, help="comma- or space-separated yaml files")
    for flag, kind in BUILD_FLAGS.items():
        build.add_argument(f"--{flag}", type=kind, default=None)
    build.add_argument("--dry_run", action="store_true", help="count prompts and tokens; call and write nothing")
    build.add_argument("--save_texts", action="store_true", help="also write <ds>.semantic_texts.jsonl")
    build.add_argument("--no_progress", action="store_true", help="hide progress bars")
    show = commands.add_parser("neighbours", help="print an item's or a user's semantic neighbours with titles")
    show.add_argument("--dataset", required=True)
    show.add_argument("--config_files", default=None)
    group = show.add_mutually_exclusive_group(required=True)
    group.add_argument("--item", help="item id (token in the atomic files)")
    group.add_argument("--user", help="user id (token in the atomic files)")
    show.add_argument("--n", type=int, default=10)
    return parser


def _config(dataset: str, config_files: str | None, overrides: Sequence[str]):
    from recbole_sracl.config import Config

    files = config_files.replace(",", " ").split() if config_files else None
    return Config(model="SASRec", dataset=dataset, config_file_list=files, argv=overrides)


def build_main(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from recbole_sracl.quick_start import _init_logging
    from recbole_sracl.semantic.build import build_semantic_files

    config = _config(args.dataset, args.config_files, overrides)
    _init_logging(config)
    options = {flag: getattr(args, flag) for flag in BUILD_FLAGS if getattr(args, flag) is not None}
    result = build_semantic_files(config, dry_run=args.dry_run, show_progress=not args.no_progress,
                                  save_texts=args.save_texts, **options)
    if args.dry_run:
        print(json.dumps(result, indent=2))
        return 0
    llm = result["llm_report"]
    counts = ", ".join(f"{count} {group}" for group, count in result["counts"].items())
    print(f"semantic files for {result['dataset']}: {counts}, dimension {result['dimension']}, k={result['k']} "
          f"-> {config['data_path']}")
    if llm:
        print(f"LLM: {llm['asked']} asked, {llm['cached']} from cache, {llm['answered']} answered, "
              f"{llm['empty']} empty, {llm['malformed']} malformed, {llm['fallbacks']} fell back to the prompt text")
    print(f"timings (s): {result['timings_seconds']}")
    return 0


def neighbours_main(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from recbole_sracl.semantic import files
    from recbole_sracl.semantic.build import BuildOptions, read_item_text

    config = _config(args.dataset, args.config_files, overrides)
    suffix = "inbr" if args.item else "unbr"
    manifest = files.check_semantic_files(config, [suffix])
    tokens, lists = files.read_neighbour_file(files.semantic_path(config, suffix), suffix)
    wanted = args.item or args.user
    if wanted not in tokens:
        raise SRACLError(f"id '{wanted}' is not in {files.semantic_path(config, suffix)}")
    options = BuildOptions.from_config(config)
    text, _ = read_item_text(files.dataset_dir(config) / f"{args.dataset}.item", [options.title_field],
                             config["field_separator"] or "\t")

    def title(item: str) -> str:
        return text.get(item, {}).get(options.title_field, "") or "(no title)"

    row = lists[tokens.index(wanted)][: args.n]
    if args.item:
        print(f"item {wanted}: {title(wanted)}")
        for rank, item in enumerate(row, 1):
            print(f"  {rank:>2}. {item}: {title(item)}")
    else:
        print(f"user {wanted} (neighbours by {manifest['options']['encoder']}):")
        for rank, user in enumerate(row, 1):
            print(f"  {rank:>2}. {user}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return {"build": build_main, "neighbours": neighbours_main}[args.command](args, overrides)
    except SRACLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: answers already received are cached; rerun the same command to continue",
              file=sys.stderr)
        return 130
