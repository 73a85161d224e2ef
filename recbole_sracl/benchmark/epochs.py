"""Learning curves by popularity group: validation and test metrics of every epoch's checkpoint.

    python -m recbole_sracl.quick_start --model=SRACL --dataset=Amazon_Office --beta=0 --alpha=0.2 --seed=2034 \\
        --save_epoch_checkpoints=True --checkpoint_dir=saved/s2034 --result_file=saved/s2034.json
    python benchmarks/epochs.py --run=saved/s2034.json --checkpoints=saved/s2034 --out=saved/s2034-epochs.json

(through the harness: add ``--save_epoch_checkpoints=True --keep_checkpoints``; the run's checkpoints are in
``<out>/work/checkpoints/<variant>__seed<seed>/``).

Early stopping and model selection look at one number, the overall validation NDCG@20. This re-scores the
validation and the test split with each epoch's weights, as RecBole's full ranking does, and splits the metric by
how often the target item occurs in the training split (``group_by_target_popularity``, default <6, 6-20, >20),
so one sees whether later epochs trade popular targets for rare ones, and whether the validation split (whose
targets come earlier in time) has the test split's mix of rare and popular targets. The overall value of each
split is the user-weighted mean of its groups; at the run's best epoch the overall test value is the run's own
test result (the report checks it). Test metrics here are a diagnostic, never a way to choose an epoch.

The report also compares two selection rules on validation only, among the saved epochs: the overall (user-weighted)
validation metric, as RecBole and the paper select, and its popularity-balanced mean (each group counts once; what
``valid_metric_average: popularity_groups`` selects on while training), with the test metric of the epoch each
rule picks. The epochs saved end where the run's own early stopping ended training.

Any checkpoint written by recbole_sracl's trainer is read: ``-epoch<N>.pth`` files, ``-last.pth`` files copied
after each epoch, the best-model file; one per epoch is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

GROUPING = "target_popularity"
SELECTION_RULES = {"users": "overall validation", "popularity_groups": "popularity-balanced validation"}


def epoch_checkpoints(folder: Path) -> dict[int, Path]:
    """``{epoch: checkpoint}`` for the ``.pth`` files in ``folder`` (the first file seen per epoch, by name).

    A file named as the trainer names ``save_epoch_checkpoints`` files (``-epoch<NNN>.pth``) is taken to hold that
    epoch (``epoch_curves`` checks it when it loads the file); any other file is loaded once to read its epoch.

    Raises:
        SystemExit: the folder holds no checkpoint.
    """
    from recbole_sracl.trainer import Trainer, load_checkpoint

    found: dict[int, Path] = {}
    for path in sorted(folder.glob("*.pth")):
        epoch = Trainer.epoch_of_name(path)
        if epoch is None:
            epoch = load_checkpoint(path).get("epoch")
        if epoch is not None:
            found.setdefault(int(epoch), path)
    if not found:
        raise SystemExit(f"no recbole_sracl checkpoint in {folder}: train with --save_epoch_checkpoints=True "
                         "(and --keep_checkpoints through the harness)")
    return dict(sorted(found.items()))


def computed_metrics(run_config: dict[str, Any]) -> set[str]:
    """The ``<metric>@<k>`` names the per-group scoring of a run with this config reports."""
    from recbole_sracl.evaluation import GROUP_METRICS

    return {f"{name.lower()}@{k}" for name in run_config["metrics"] if name.lower() in GROUP_METRICS
            for k in run_config["topk"]}


def overall(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """The user-weighted mean of per-group metrics (equal to RecBole's value over all users), with ``users``."""
    users = sum(row["users"] for row in groups.values())
    metrics = [key for key in next(iter(groups.values())) if key != "users"]
    result: dict[str, float] = {key: sum(row[key] * row["users"] for row in groups.values()) / users
                                for key in metrics}
    result["users"] = users
    return result


def epoch_curves(run: dict[str, Any], checkpoints: dict[int, Path], data_path: str | None = None,
                 show_progress: bool = True) -> dict[str, Any]:
    """Per epoch and split (``valid``, ``test``): metrics by target-popularity group and ``all``."""
    from tqdm import tqdm

    from recbole_sracl.benchmark.embeddings import load_run
    from recbole_sracl.data.sequences import training_histories
    from recbole_sracl.evaluation import test_result_by_group
    from recbole_sracl.trainer import load_checkpoint

    data_path = data_path or str(Path(run["config"]["data_path"]).parent)  # RecBole's data_path ends in <dataset>
    config, _, train_data, valid_data, test_data = load_run(run["config"], run["dataset"], data_path,
                                                            run.get("config_files"))
    key = f"group_by_{GROUPING}"
    config[key] = run["config"].get(key, config[key])  # the run's own groups
    if not config[key]:
        raise SystemExit(f"{key} is empty in the run's config: nothing to split by")
    model = config.model_class(config, train_data._dataset)
    histories = training_histories(train_data._dataset)
    curves: dict[str, Any] = {}
    for epoch, path in tqdm(checkpoints.items(), desc="epochs", disable=not show_progress):
        checkpoint = load_checkpoint(path)
        if checkpoint.get("epoch") is not None and int(checkpoint["epoch"]) != epoch:
            raise SystemExit(f"{path} holds epoch {checkpoint['epoch']}, not the epoch {epoch} its name says "
                             "(renamed by hand?): move it out of --checkpoints or restore its trainer-given name")
        model.load_state_dict(checkpoint["state_dict"])
        model.load_other_parameter(checkpoint.get("other_parameter"))
        model.eval()
        row = {}
        for split, data in (("valid", valid_data), ("test", test_data)):
            by_group = test_result_by_group(config, model, train_data._dataset, data, histories)
            if by_group is None:
                raise SystemExit("the run's splits cannot be scored by group: it needs full ranking with one target "
                                 "per user (eval_args split LS, mode full) in a single process")
            row[split] = {"all": overall(by_group[GROUPING]), **by_group[GROUPING]}
        curves[str(epoch)] = row
    return curves


def groups_of(split_row: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The popularity groups of one split's row of :func:`epoch_curves` (without ``all``)."""
    return {label: row for label, row in split_row.items() if label != "all"}


def selections(curves: dict[str, Any], metric: str, decimals: int = 4) -> dict[str, dict[str, Any]]:
    """Per rule of :data:`SELECTION_RULES`: the epoch the trainer would keep as best, i.e. the highest validation
    ``metric`` under that rule rounded to ``decimals`` (RecBole's ``metric_decimal_place``), the later epoch on
    ties (RecBole's early stopping keeps a score >= the best), with its validation and test values."""
    from recbole_sracl.evaluation import balanced_mean

    scores = {"users": lambda row: row["valid"]["all"][metric],
              "popularity_groups": lambda row: balanced_mean(groups_of(row["valid"]), metric)}
    chosen = {}
    for rule, score in scores.items():
        epoch = max(curves, key=lambda name: (round(score(curves[name]), decimals), int(name)))
        chosen[rule] = {"epoch": int(epoch), "valid": score(curves[epoch]),
                        "test": curves[epoch]["test"]["all"][metric]}
    return chosen


def render(report: dict[str, Any], metric: str) -> str:
    """Markdown table of ``metric`` per epoch: validation then test, overall and per group, the balanced
    validation mean (* = the best epoch), then the epoch each selection rule picks."""
    from recbole_sracl.evaluation import balanced_mean

    curves, best = report["epochs"], report["best_epoch"]
    first = next(iter(curves.values()))
    groups = {split: list(first[split]) for split in ("valid", "test")}
    users = {split: " / ".join(f"{label} {row['users']}" for label, row in first[split].items())
             for split in groups}
    header = [f"{split} {label}" for split in groups for label in groups[split]] + ["valid balanced"]
    lines = [f"{report['dataset']}: {metric} per epoch, by the target item's training popularity "
             f"(users: valid {users['valid']}; test {users['test']}); * = the run's best (selected) epoch", "",
             "| epoch | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for epoch, row in curves.items():
        mark = "*" if int(epoch) == best else ""
        values = [f"{row[split][label][metric]:.4f}" for split in groups for label in groups[split]]
        values.append(f"{balanced_mean(groups_of(row['valid']), metric):.4f}")
        lines.append(f"| {epoch}{mark} | " + " | ".join(values) + " |")
    lines += ["", "Selection among these epochs on validation only (valid balanced: the unweighted mean over the "
                  "popularity groups):", ""]
    for rule, chosen in report["selection"].items():
        lines.append(f"- {SELECTION_RULES[rule]} {metric}: epoch {chosen['epoch']} (valid {chosen['valid']:.4f}), "
                     f"test {metric} {chosen['test']:.4f}")
    check = report.get("best_epoch_check")
    if check:
        lines += ["", f"At the best epoch the overall test {metric} is {check['recomputed']:.4f}; the run file says "
                      f"{check['run_file']:.4f}."]
    return "\n".join(lines)


def rerender(path: Path, metric: str, argv: Sequence[str] | None) -> int:
    """Add this version's selection rules to an earlier report and rewrite its JSON and ``.md`` in place; the
    scoring command and time stay, the re-rendering command is added."""
    import time

    if not path.is_file():
        raise SystemExit(f"--report={path}: no such report")
    report = json.loads(path.read_text())
    if "epochs" not in report or "command" not in report:
        raise SystemExit(f"--report={path}: not a report written by benchmarks/epochs.py --out")
    first = next(iter(report["epochs"].values()))
    if metric not in first["valid"]["all"]:
        raise SystemExit(f"--metric={metric}: not in the report; it has {', '.join(sorted(first['valid']['all']))}")
    report["selection"] = selections(report["epochs"], metric)
    report["rendered"] = {"command": " ".join(["python benchmarks/epochs.py",
                                                *(argv if argv is not None else sys.argv[1:])]),
                          "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps(report, indent=2))
    table = render(report, metric)
    path.with_suffix(".md").write_text(
        f"{table}\n\nCommand: `{report['command']}` ({report['finished_at']}); rendered again by "
        f"`{report['rendered']['command']}` ({report['rendered']['at']}).\n")
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="the run's result file (quick_start --result_file, or the "
                        "harness's runs/<variant>__seed<seed>.json)")
    parser.add_argument("--checkpoints", help="folder holding the run's per-epoch checkpoints")
    parser.add_argument("--report", help="instead of --run/--checkpoints: an earlier report (JSON) to render again "
                        "with this version's table and selection rules, in place (nothing is re-scored)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: the run's data_path)")
    parser.add_argument("--metric", default="ndcg@20", help="metric of the markdown table (default: ndcg@20)")
    parser.add_argument("--out", default=None, help="also write the report as JSON here (and the table next to it, .md)")
    args = parser.parse_args(argv)
    from recbole_sracl.benchmark.embeddings import publish_report

    if args.report:
        return rerender(Path(args.report), args.metric.lower(), argv)
    if not (args.run and args.checkpoints):
        parser.error("--run and --checkpoints are required (or --report to render an earlier report again)")
    run_file, folder = Path(args.run), Path(args.checkpoints)
    if not run_file.is_file():
        raise SystemExit(f"--run={run_file}: no such result file")
    if not folder.is_dir():
        raise SystemExit(f"--checkpoints={folder}: no such folder")
    run = json.loads(run_file.read_text())
    metric = args.metric.lower()
    if metric not in computed_metrics(run["config"]):  # before hours of scoring, not after
        raise SystemExit(f"--metric={args.metric}: not computed; use hit, ndcg or mrr at one of the run's topk")
    curves = epoch_curves(run, epoch_checkpoints(folder), args.data_path)
    report: dict[str, Any] = {"dataset": run["dataset"], "model": run["model"], "seed": run.get("seed"),
                              "run_file": str(run_file), "best_epoch": run.get("best_epoch"), "epochs": curves}
    report["selection"] = selections(curves, metric)
    best = curves.get(str(run.get("best_epoch")))
    if best is not None and metric in run.get("test_result", {}):
        report["best_epoch_check"] = {"recomputed": best["test"]["all"][metric], "run_file": run["test_result"][metric]}
    publish_report(report, lambda stamped: render(stamped, metric), "benchmarks/epochs.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
