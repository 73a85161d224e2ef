"""Training speed in ONE process: seconds per training epoch and peak memory, as ratios to SASRec.

    python benchmarks/speed.py --dataset=Amazon_Office --data_path=/tmp/data --epochs=3
    python benchmarks/speed.py --semantic --dataset=Amazon_Office --data_path=/tmp/data

Every model sees the same data, batches and settings; each gets one warm-up epoch, then ``--epochs`` timed
training epochs (no evaluation inside the timing); the median is reported. ``--semantic`` instead measures
the offline pipeline: prompts built per second, texts encoded per second, and retrieval time for the
dataset's users, for 22k users and for a synthetic million users with exact and approximate faiss indexes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

SPECS: dict[str, tuple[str, list[str]]] = {
    "SASRec": ("SASRec", []),
    "CL4SRec": ("CL4SRec", []),
    "DuoRec": ("DuoRec", []),
    "SRACL (online)": ("SRACL", ["--neighbour_encoding=online"]),
    "SRACL (online_unique)": ("SRACL", ["--neighbour_encoding=online_unique"]),
    "SRACL (no_grad)": ("SRACL", ["--neighbour_encoding=no_grad"]),
    "SRACL (cached)": ("SRACL", ["--neighbour_encoding=cached"]),
    "SRACL (default)": ("SRACL", []),
}


def time_model(model: str, dataset: str, overrides: list[str], epochs: int, config_files: list[str]) -> dict[str, Any]:
    """Warm-up epoch + ``epochs`` timed training epochs; median seconds and peak memory."""
    import torch
    from recbole.utils import init_seed

    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.quick_start import build_config
    from recbole_sracl.trainer import PeakMemory
    from recbole_sracl.utils import get_trainer

    config = build_config(model, dataset, config_files, argv=overrides + ["--show_progress=False", "--state=WARNING"])
    model_class = config.model_class
    if hasattr(model_class, "prepare_config"):
        model_class.prepare_config(config)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config), getattr(model_class, "build_train_augmenter", None))
    init_seed(config["seed"], config["reproducibility"])
    net = model_class(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    hook = getattr(net, "on_train_epoch_start", None)
    seconds, memory = [], []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        with PeakMemory(config["device"]) as peak:
            if hook is not None:
                hook(epoch)
            trainer._train_epoch(train, epoch)
            if config["device"].type == "cuda":
                torch.cuda.synchronize()
        if epoch > 0:  # epoch 0 is the warm-up
            seconds.append(time.perf_counter() - start)
            memory.append(peak.peak_mb)
    return {"model": model, "overrides": overrides, "epoch_seconds": seconds,
            "median_epoch_seconds": statistics.median(seconds), "peak_memory_mb": max(memory),
            "batches_per_epoch": len(train), "device": str(config["device"]),
            "neighbour_encoding": config["neighbour_encoding"] if model == "SRACL" else None}


def semantic_throughput(dataset: str, config_files: list[str], overrides: list[str], sample: int,
                        users: Sequence[int], queries: int, exact_limit: int = 50_000) -> dict[str, Any]:
    """Prompt building, encoding and retrieval speed on this machine.

    Retrieval is timed on synthetic Gaussian vectors for each count in ``users`` (a worst case for approximate
    indexes: no cluster structure) and on the dataset's own ``.uemb`` / ``.iemb`` vectors where they are built.
    """
    import numpy as np

    from recbole_sracl.config import Config
    from recbole_sracl.semantic.build import BuildOptions, collect_prompts
    from recbole_sracl.semantic.encoder import SentenceEncoder
    from recbole_sracl.semantic.files import read_embedding_file, semantic_path
    from recbole_sracl.semantic.retrieval import normalise

    config = Config("SASRec", dataset, config_files, argv=overrides + ["--state=WARNING"])
    options = BuildOptions.from_config(config)
    start = time.perf_counter()
    groups = collect_prompts(config, options)
    user_prompts, item_prompts = groups["users"], groups["items"]
    prompt_seconds = time.perf_counter() - start
    prompts = user_prompts + item_prompts
    report: dict[str, Any] = {"dataset": dataset, "prompts": len(prompts),
                              "prompts_per_second": len(prompts) / prompt_seconds}
    encoder = SentenceEncoder(options.encoder, options.device, options.encoder_batch_size)
    encoder.encode(["warm up"], show_progress=False)
    for kind, chosen in (("user", user_prompts[:sample]), ("item", item_prompts[:sample])):
        texts = [prompt.message for prompt in chosen]
        start = time.perf_counter()
        encoder.encode(texts, show_progress=False)
        report[f"{kind}_texts_per_second"] = len(texts) / (time.perf_counter() - start)
        report[f"{kind}_mean_chars"] = float(np.mean([len(text) for text in texts]))
    rng = np.random.default_rng(0)
    retrieval = []
    for count in users:
        vectors = normalise(rng.normal(size=(count, encoder.dimension)).astype(np.float32))
        retrieval.append({"vectors": "synthetic Gaussian", **retrieval_timing(vectors, queries, exact_limit)})
        print(f"retrieval, {count} synthetic vectors: done", flush=True)
    for suffix in ("uemb", "iemb"):
        path = semantic_path(config, suffix)
        if path.is_file():
            vectors = normalise(read_embedding_file(path, suffix)[1])
            retrieval.append({"vectors": path.name, **retrieval_timing(vectors, queries, exact_limit)})
        else:
            print(f"{path} not built: no retrieval timing on the dataset's own vectors", flush=True)
    report["retrieval"] = retrieval
    return report


def retrieval_timing(vectors: Any, queries: int, exact_limit: int, k: int = 100) -> dict[str, Any]:
    """Exact (flat), HNSW and IVF top-``k`` search over normalised ``vectors``: build and search seconds, and the
    approximate indexes' recall@k against the exact answer.

    Above ``exact_limit`` rows, searches are timed on the first ``queries`` rows and scaled to all rows (recall is
    measured on those rows).
    """
    from recbole_sracl.semantic.retrieval import build_index, recall_against, top_k_neighbours, without_self

    count = len(vectors)
    k = min(k, count - 1)
    row: dict[str, Any] = {"rows": count, "k": k}
    sampled = count > exact_limit
    probe = vectors[:queries] if sampled else vectors
    if sampled:  # exact answer for a sample of queries only, extrapolated to all rows
        flat = build_index(vectors, "flat")
        start = time.perf_counter()
        _, truth = flat.search(probe, k + 1)
        row["flat_seconds"] = (time.perf_counter() - start) * count / len(probe)
        row["flat_seconds_note"] = f"measured on {len(probe)} queries, scaled to {count}"
        exact = without_self(truth, 0, k)
        del flat
    else:
        start = time.perf_counter()
        exact = top_k_neighbours(vectors, k, "flat")
        row["flat_seconds"] = time.perf_counter() - start
    row["recall_measured_on_queries"] = len(probe)
    for kind in ("hnsw", "ivf"):
        start = time.perf_counter()
        index = build_index(vectors, kind)
        row[f"{kind}_build_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        _, found = index.search(probe, k + 1)
        row[f"{kind}_search_seconds_all_rows"] = (time.perf_counter() - start) * count / len(probe)
        row[f"{kind}_recall"] = recall_against(exact, without_self(found, 0, k))
        del index
    return row


def render(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["name"] == "SASRec"), results[0])
    lines = ["| model | s/epoch (median) | x SASRec | peak memory MB | epochs timed |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['median_epoch_seconds']:.2f} | "
                     f"{r['median_epoch_seconds'] / base['median_epoch_seconds']:.2f} | {r['peak_memory_mb']:.0f} | "
                     f"{len(r['epoch_seconds'])} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", default=",".join(SPECS), help=f"comma-separated, from: {', '.join(SPECS)}")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--out", default="benchmarks/results/speed")
    parser.add_argument("--semantic", action="store_true", help="measure the semantic pipeline instead")
    parser.add_argument("--sample", type=int, default=500, help="texts encoded per kind (--semantic)")
    parser.add_argument("--users", default="22363,1000000", help="synthetic user counts for retrieval (--semantic)")
    parser.add_argument("--queries", type=int, default=10000, help="queries timed on the big index (--semantic)")
    parser.add_argument("--exact_limit", type=int, default=50_000,
                        help="above this many users, search is timed on --queries queries and scaled (--semantic)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    config_files = args.config_files.replace(",", " ").split() if args.config_files else []
    from recbole_sracl.quick_start import machine_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    command = " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv)))
    if args.semantic:
        report = semantic_throughput(args.dataset, config_files, overrides, args.sample,
                                     [int(u) for u in args.users.split(",")], args.queries, args.exact_limit)
        report.update(command=command, date=stamp, machine=machine_info())
        (out / f"semantic-{args.dataset}-{stamp}.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return 0
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPECS]
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {list(SPECS)}", file=sys.stderr)
        return 2
    results = []
    for name in names:
        model, extra = SPECS[name]
        result = time_model(model, args.dataset, overrides + extra, args.epochs, config_files)
        result["name"] = name
        results.append(result)
        print(f"{name}: {result['median_epoch_seconds']:.2f} s/epoch, peak {result['peak_memory_mb']:.0f} MB", flush=True)
    table = render(results)
    print(table)
    report = {"command": command, "date": stamp, "machine": machine_info(), "results": results}
    (out / f"{args.dataset}-{stamp}.json").write_text(json.dumps(report, indent=2))
    (out / f"{args.dataset}-{stamp}.md").write_text(
        f"Training speed on {args.dataset}, {stamp}. Command: `{command}`\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
