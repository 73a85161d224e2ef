"""Comparison harness: several variants x several seeds on one dataset, identical shared settings.

    python benchmarks/compare.py --dataset=Amazon_Office --data_path=/tmp/data --variants=main,ablations

Each run is a separate ``python -m recbole_sracl.quick_start`` process (so one crash or one leak cannot
touch the others) writing ``runs/<variant>__seed<seed>.json``; finished runs are skipped when the command
is repeated, and a run that was cut off mid-training continues from its ``-last.pth`` checkpoint
(``--resume``), so an interrupted harness loses at most one epoch per run; stopping the harness (Ctrl-C, SIGTERM,
SIGHUP) stops the runs it started. The summary (CSV, markdown table with mean +- std, improvement over the best
baseline and a paired t-test across seeds, PNG chart, per-group tables) is rebuilt from all the run files at the end,
or alone with ``--summarise_only``; ``--status`` prints where each run stands and starts nothing.
``--pool_with=<folder>,...`` also summarises the runs of this folder and other result folders together
(``results_pooled*``: seeds added in later sessions). ``--check_against=<result folder>`` compares the runs with the
same variants and seeds in another folder (a reproduction check: ``reproduction.md``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

try:
    import fcntl
except ImportError:  # Windows has no fcntl
    fcntl = None

from recbole_sracl.benchmark.variants import GROUPS, VARIANTS, Variant, expand
from recbole_sracl.quick_start import source_revision
from recbole_sracl.utils import atomic_write

METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20")
DEFAULT_SEEDS = (2024, 2025, 2026)


def run_name(variant: str, seed: int) -> str:
    return f"{variant.replace('/', '_')}__seed{seed}"


def run_command(variant: Variant, seed: int, dataset: str, shared: Sequence[str], result_file: Path,
                checkpoint_dir: Path) -> list[str]:
    """The exact command of one run (shared overrides first, the variant's own last)."""
    return [
        sys.executable, "-m", "recbole_sracl.quick_start", f"--model={variant.model}", f"--dataset={dataset}",
        *shared, *variant.overrides, f"--seed={seed}", "--show_progress=False",
        f"--checkpoint_dir={checkpoint_dir}", f"--result_file={result_file}",
    ]


def completed(result_file: Path) -> bool:
    try:
        return json.loads(result_file.read_text()).get("test_result") is not None
    except (OSError, json.JSONDecodeError):
        return False


def interrupted_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The ``-last.pth`` file an interrupted run left behind (the newest one), or None."""
    candidates = sorted(checkpoint_dir.glob("*-last.pth"), key=lambda path: path.stat().st_mtime)
    return candidates[-1] if candidates else None


class ChildProcesses:
    """The training processes one harness command started and that are still running.

    Stopping the harness (Ctrl-C, ``kill``, a closed terminal) stops them too: a run left training on its own would
    keep writing into the result folder, and a rerun of the harness would resume the same run a second time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def call(self, command: list[str], **popen_kwargs: Any) -> int | None:
        """Run ``command`` to its end and return its exit code; None if the harness is stopping (not started)."""
        with self._lock:
            if self.stopping:
                return None
            process = subprocess.Popen(command, **popen_kwargs)
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop_all(self, grace_seconds: float = 30.0) -> int:
        """Start no more processes, terminate the running ones (killed after ``grace_seconds``); return how many."""
        with self._lock:
            self.stopping = True
            running = list(self._running)
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace_seconds
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return len(running)


def _run_one(command: list[str], log_file: Path, threads: int, cwd: Path,
             children: ChildProcesses | None = None) -> tuple[int | None, float]:
    """Run one training command with its output in ``log_file``; returns (exit code or None if not started, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    started = time.time()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    resuming = any(arg.startswith("--resume=") for arg in command)
    with open(log_file, "a" if resuming else "w") as log:
        log.write(shlex.join(command) + "\n")
        log.flush()
        code = (children or ChildProcesses()).call(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return code, time.time() - started


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as Ctrl-C does (a signal
    that is ignored, as SIGHUP under ``nohup``, stays ignored)."""
    names = [name for name in ("SIGTERM", "SIGHUP")
             if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {name: signal.signal(getattr(signal, name), interrupt) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def ensure_semantic_files(dataset: str, shared: Sequence[str], variants: Sequence[Variant],
                          config_files: Sequence[str] = ()) -> None:
    """Build missing semantic files once, before SRACL runs start in parallel and race for them."""
    if not any(variant.uses_semantic_files for variant in variants):
        return
    from recbole_sracl.config import Config
    from recbole_sracl.errors import SemanticFilesError
    from recbole_sracl.model.sracl import SRACL
    from recbole_sracl.semantic.files import check_semantic_files

    shared = [arg for arg in shared if not arg.startswith("--config_files=")]
    checked: set[tuple[str, ...]] = set()
    try:
        for variant in variants:
            if not variant.uses_semantic_files:
                continue
            config = Config(model="SRACL", dataset=dataset, config_file_list=list(config_files),
                            argv=shared + list(variant.overrides))
            suffixes = tuple(SRACL.semantic_suffixes(config))
            if suffixes and suffixes not in checked:  # reading the files takes seconds: check each set once
                check_semantic_files(config, suffixes)
                checked.add(suffixes)
    except SemanticFilesError as error:
        print(f"semantic files: {error}", flush=True)
        raise SystemExit(
            "build the semantic files first (the command above), then rerun the harness"
        ) from None


def record_invocation(out: Path, invocation: dict[str, Any]) -> None:
    """Append one invocation to ``out/harness.json``.

    Several harness commands may share one output folder (one per core), so the read-modify-write holds an
    exclusive lock (``work/harness.lock``, POSIX only) and the new file replaces the old one atomically: a reader
    never sees a half-written file and no invocation is lost.
    """
    harness_file = out / "harness.json"
    (out / "work").mkdir(parents=True, exist_ok=True)
    with open(out / "work" / "harness.lock", "w") as lock:
        if fcntl is not None:  # Windows has no flock: the replace is still atomic
            fcntl.flock(lock, fcntl.LOCK_EX)
        history = json.loads(harness_file.read_text()) if harness_file.is_file() else {"invocations": []}
        history["invocations"].append(invocation)
        atomic_write(harness_file, lambda handle: handle.write(json.dumps(history, indent=2)))


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: whole numbers, comma- or space-separated."""
    try:
        seeds = [int(seed) for seed in text.replace(",", " ").split()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ValueError(f"--seeds={text}: give whole numbers, comma-separated (e.g. --seeds=2024,2025,2026)")
    return seeds


def planned_runs(args: argparse.Namespace) -> tuple[list[Variant], list[int]]:
    """The variants and seeds that ``--variants`` and ``--seeds`` name (KeyError / ValueError if one is invalid)."""
    return expand(args.variants.replace(",", " ").split()), parse_seeds(args.seeds)


def _checkpoint_dir(work: Path, name: str) -> Path:
    """Where run ``name`` keeps its checkpoints (``-last.pth`` to resume from), under the harness's ``work`` folder."""
    return work / "checkpoints" / name


def _log_file(work: Path, name: str) -> Path:
    """Where the harness writes run ``name``'s output, under its ``work`` folder."""
    return work / "logs" / f"{name}.log"


def run_all(args: argparse.Namespace, shared: list[str]) -> None:
    out = Path(args.out)
    variants, seeds = planned_runs(args)
    config_files = args.config_files.replace(",", " ").split() if args.config_files else []
    ensure_semantic_files(args.dataset, shared, variants, config_files)
    if config_files:
        shared = [f"--config_files={','.join(str(Path(f).resolve()) for f in config_files)}"] + shared
    work = out / "work"
    jobs = []
    for seed in seeds:
        for variant in variants:
            name = run_name(variant.name, seed)
            result_file = out / "runs" / f"{name}.json"
            if completed(result_file):
                continue
            checkpoint_dir = _checkpoint_dir(work, name).resolve()
            command = run_command(variant, seed, args.dataset, shared, result_file.resolve(), checkpoint_dir)
            last = interrupted_checkpoint(checkpoint_dir)
            if last is not None:
                command.append(f"--resume={last}")
            jobs.append((name, command, result_file))
    record_invocation(out, {
        "command": shlex.join([sys.executable, *sys.argv]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs_to_do": [name for name, _, _ in jobs], "workers": args.workers,
        "threads_per_run": args.threads, "source": source_revision(),
    })
    print(f"{len(jobs)} run(s) to do, {args.workers} at a time ({args.threads} thread(s) each) -> {out}", flush=True)
    children = ChildProcesses()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
    try:
        with _signals_as_interrupt():
            futures = {
                pool.submit(_run_one, command, _log_file(work, name), args.threads, work, children): (name, result_file)
                for name, command, result_file in jobs
            }
            for future in concurrent.futures.as_completed(futures):
                name, result_file = futures[future]
                code, seconds = future.result()
                status = "ok" if code == 0 and completed(result_file) else f"FAILED (exit {code}, see work/logs)"
                print(f"{name}: {status} in {seconds / 60:.1f} min", flush=True)
                if code == 0 and not args.keep_checkpoints:
                    for checkpoint in _checkpoint_dir(work, name).glob("*.pth"):
                        checkpoint.unlink()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        stopped = children.stop_all()
        print(f"stopped: {stopped} running run(s) terminated, the others not started; rerun the same command to "
              "resume them (each from its last finished epoch)", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        pool.shutdown(wait=True)


# ---- status -------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _run_status(name: str, out: Path, now: float) -> list[str]:
    """The cells of one run's row in :func:`status_report`."""
    import statistics

    result_file = out / "runs" / f"{name}.json"
    if completed(result_file):
        data = json.loads(result_file.read_text())
        return ["finished", str(data["epochs_run"]), str(data["best_epoch"]), f"{data['best_valid_score']:.4f}",
                f"test NDCG@20 {data['test_result']['ndcg@20']:.4f}", f"{data['median_epoch_seconds']:.1f}", "",
                _duration(now - result_file.stat().st_mtime) + " ago"]
    last = interrupted_checkpoint(_checkpoint_dir(out / "work", name))
    if last is None:
        log_file = _log_file(out / "work", name)
        if log_file.is_file():  # the harness started it: running its first epoch, or it failed (the log says)
            return [f"started, no epoch finished yet (or failed: see work/logs/{log_file.name})", "0", "", "", "",
                    "", "", _duration(now - log_file.stat().st_mtime) + " ago"]
        return ["not started", "", "", "", "", "", "", ""]
    from recbole_sracl.errors import SRACLError
    from recbole_sracl.trainer import load_checkpoint

    age = _duration(now - last.stat().st_mtime) + " ago"
    try:
        checkpoint = load_checkpoint(last)
    except SRACLError as error:
        return ["unreadable checkpoint", "", "", "", str(error), "", "", age]
    config, done = checkpoint.get("config") or {}, checkpoint["epoch"] + 1
    seconds = statistics.median(checkpoint["epoch_seconds"]) if checkpoint.get("epoch_seconds") else None
    if checkpoint.get("finished"):
        state, more = "stopped early, test not evaluated (rerun to evaluate)", 0
    else:
        state = "training or cut off (rerun to resume)"
        more = None  # checkpoints without the settings early stopping needs: unknown
        if all(isinstance(config.get(key), int) for key in ("stopping_step", "eval_step", "epochs")):
            until_stop = (config["stopping_step"] + 1 - checkpoint["cur_step"]) * max(1, config["eval_step"])
            more = max(0, min(until_stop, config["epochs"] - done))
    scores = [(epoch, score) for epoch, score in enumerate(checkpoint.get("epoch_valid_score") or [])
              if score is not None]
    latest = f"valid {scores[-1][1]:.4f} at epoch {scores[-1][0]}" if scores else ""
    at_least = "" if more is None else f"{more}" + (f" ({_duration(more * seconds)})" if seconds and more else "")
    return [state, str(done), str(checkpoint["best_epoch"]), f"{checkpoint['best_valid_score']:.4f}", latest,
            "" if seconds is None else f"{seconds:.1f}", at_least, age]


def status_report(out: Path, planned: Sequence[str] = (), now: float | None = None) -> str:
    """Markdown table of where every run in ``out`` stands, from its result file or its ``-last.pth`` checkpoint.

    Rows: the ``planned`` run names (``variant__seed<seed>``) first, in order, then any other run found in
    ``out/runs``, ``out/work/checkpoints`` or ``out/work/logs``. For an unfinished run it gives the epochs done, the
    best epoch so far and the fewest epochs early stopping still needs (patience left), with the time they take at
    the run's median epoch; the age of the newest file tells a running run (minutes) from one that was cut off.
    """
    found = {path.stem for path in (out / "runs").glob("*.json")}
    checkpoints = out / "work" / "checkpoints"
    if checkpoints.is_dir():
        found |= {path.name for path in checkpoints.iterdir() if path.is_dir()}
    found |= {path.stem for path in (out / "work" / "logs").glob("*.log")}
    names = list(dict.fromkeys([*planned, *sorted(found)]))
    if not names:
        return f"no runs in {out}: nothing planned (--variants, --seeds) and no run files, checkpoints or logs there"
    now = time.time() if now is None else now
    lines = [f"### Runs in {out}", "",
             "| run | state | epochs done | best epoch | best valid score | latest result | s/epoch (median) "
             "| epochs at least still to run (time) | last written |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(_run_status(name, out, now)) + " |" for name in names]
    return "\n".join(lines) + "\n"


# ---- summary ------------------------------------------------------------------------------------------------


FinishedRuns = list[tuple[str, dict[str, Any]]]  # (variant, run JSON) of each finished run, in file-name order


def _finished_run_files(out: Path) -> FinishedRuns:
    """``(variant, run JSON)`` of every finished run under ``out/runs`` (read once per summary, then passed on)."""
    found = []
    for path in sorted((out / "runs").glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("test_result") is not None:
            found.append((path.stem.rsplit("__seed", 1)[0], data))
    return found


def pooled_run_files(folders: Sequence[Path]) -> tuple[FinishedRuns, dict[Path, int]]:
    """The finished runs of several result folders together (``--pool_with``), e.g. seeds added in a later session,
    and how many finished runs each folder holds.

    A variant and seed finished in more than one folder is kept once when the test results are identical (a
    reproduction rerun; the copy with per-group metrics is preferred, since a later rerun may have recorded them
    where the first run did not) and is an error otherwise: which of the two to report is the user's choice.
    """
    found: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}
    counts: dict[Path, int] = {}
    for folder in folders:
        if not (folder / "runs").is_dir():
            raise SystemExit(f"--pool_with: {folder / 'runs'} does not exist; give result folders of "
                             "benchmarks/compare.py (the --out of earlier invocations)")
        finished = _finished_run_files(folder)
        counts[folder] = len(finished)
        for variant, data in finished:
            key = (variant, data["seed"])
            if key in found and found[key][1]["test_result"] != data["test_result"]:
                raise SystemExit(
                    f"--pool_with: {run_name(*key)} finished in both {found[key][0]} and {folder} with different "
                    "test results; pool folders that hold different seeds, or leave one of the two folders out")
            if key not in found or (data.get("test_result_by_group") and not found[key][1].get("test_result_by_group")):
                found[key] = (folder, data)
    return [(variant, data) for (variant, _), (_, data) in sorted(found.items())], counts


def paired_p_value(ours: Sequence[float], theirs: Sequence[float]) -> float | None:
    """p-value of a paired t-test (``scipy.stats.ttest_rel``); None with fewer than two pairs, no difference, or the
    same difference on every pair (no spread: the t statistic is infinite and says nothing about seed noise)."""
    import numpy as np
    from scipy import stats

    differences = np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float)
    if len(differences) < 2 or np.ptp(differences) <= 1e-9:  # metrics carry 4 decimals: float noise is not spread
        return None
    return float(stats.ttest_rel(ours, theirs).pvalue)


def _paired_cells(ours: dict[int, dict[str, float]], theirs: dict[int, dict[str, float]],
                  metrics: Sequence[str]) -> tuple[int, list[str]]:
    """Over the seeds both have: per metric ``change of the mean, p <paired t-test>, <seeds higher>/<seeds>``."""
    import numpy as np

    shared = sorted(set(ours) & set(theirs))
    if not shared:
        return 0, ["n/a"] * len(metrics)
    cells = []
    for metric in metrics:
        mine = np.array([ours[seed][metric] for seed in shared])
        other = np.array([theirs[seed][metric] for seed in shared])
        change = f"{100 * (mine.mean() / other.mean() - 1):+.1f}%" if other.mean() else "n/a"
        p_value = paired_p_value(mine, other)
        cells.append(f"{change}, p {'n/a' if p_value is None else f'{p_value:.3f}'}, "
                     f"{int(np.sum(mine > other))}/{len(shared)}")
    return len(shared), cells


def _metric_label(metric: str) -> str:
    return metric.upper().replace("HIT", "HR")


def paired_tests(by_variant: dict[str, dict[int, dict[str, Any]]], order: Sequence[str], reference: str) -> str:
    """Markdown: every variant against ``reference`` on each metric, over the seeds both finished.

    Per metric the change of the mean, the p-value of a paired t-test and on how many seeds the variant is higher.
    """
    lines = [f"Paired against {reference}, per metric (seeds both finished; change of the mean, paired t-test p, "
             "seeds on which the variant is higher):", "",
             "| variant | shared seeds | " + " | ".join(_metric_label(m) for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for name in order:
        if name == reference:
            continue
        shared, cells = _paired_cells(by_variant[name], by_variant[reference], METRICS)
        if shared:
            lines.append(f"| {name} | {shared} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _one_group(runs: dict[int, dict[str, dict[str, float]]], label: str) -> dict[int, dict[str, float]]:
    """``{seed: metrics}`` of one user group, from ``{seed: {group label: metrics}}``."""
    return {seed: groups[label] for seed, groups in runs.items() if label in groups}


RunsByGroup = dict[str, dict[str, dict[int, dict[str, dict[str, float]]]]]


def _runs_by_group(finished: FinishedRuns) -> tuple[RunsByGroup, dict[str, list[str]]]:
    """``{grouping: {variant: {seed: {group label: metrics}}}}`` from the runs' ``test_result_by_group``, and the
    group labels of each grouping in display order."""
    from recbole_sracl.evaluation import group_order

    grouped: RunsByGroup = {}
    for variant, data in finished:
        for grouping, groups in (data.get("test_result_by_group") or {}).items():
            grouped.setdefault(grouping, {}).setdefault(variant, {})[data["seed"]] = groups
    labels = {grouping: sorted({label for runs in by_variant.values() for groups in runs.values() for label in groups},
                               key=group_order) for grouping, by_variant in grouped.items()}
    return grouped, labels


def group_paired_tests(finished: FinishedRuns, order: Sequence[str], reference: str,
                       metrics: Sequence[str] = ("hit@20", "ndcg@20")) -> str:
    """Markdown: :func:`paired_tests` within each user group (``test_result_by_group`` of the runs).

    Empty when ``reference`` has no per-group metrics (runs made before they were recorded).
    """
    grouped, labels_of = _runs_by_group(finished)
    sections = []
    for grouping, by_variant in grouped.items():
        if reference not in by_variant:
            continue
        labels = labels_of[grouping]
        rows = []
        for variant in [name for name in order if name in by_variant and name != reference]:
            row, shared = [], 0
            for label in labels:
                count, cells = _paired_cells(_one_group(by_variant[variant], label),
                                             _one_group(by_variant[reference], label), metrics)
                shared, row = max(shared, count), row + cells
            if shared:
                rows.append(f"| {variant} | {shared} | " + " | ".join(row) + " |")
        if rows:
            sections.append("\n".join([
                f"Paired against {reference} by {grouping.replace('_', ' ')} (seeds both finished with per-group "
                "metrics; change of the mean, paired t-test p, seeds on which the variant is higher):", "",
                "| variant | shared seeds | " + " | ".join(f"{label} {_metric_label(m)}" for label in labels
                                                          for m in metrics) + " |",
                "|---|---|" + "---|" * (len(labels) * len(metrics)), *rows]))
    return "\n\n".join(sections)


def load_runs(finished: FinishedRuns) -> list[dict[str, Any]]:
    """One flat row per finished run: the columns of ``results.csv``."""
    runs = []
    for variant, data in finished:
        memory = [entry.get("peak_mb", 0.0) for entry in data.get("epoch_memory", [])]
        runs.append({
            "variant": variant, "seed": data["seed"], **{m: data["test_result"][m] for m in METRICS},
            "best_epoch": data["best_epoch"], "epochs_run": data["epochs_run"],
            "seconds_per_epoch": data["median_epoch_seconds"], "peak_memory_mb": max(memory) if memory else None,
            "device": data["machine"].get("gpu") or data["machine"].get("processor"),
            "threads": data["machine"].get("torch_threads"),
        })
    return runs


def summarise(out: Path, dataset: str, title: str = "", reference: str | None = None,
              pool_with: Sequence[Path] = ()) -> str:
    """Write results.csv, results.md and results.png from the run files; return the markdown.

    With ``reference`` (a variant name) every other variant is compared with it instead of with the best
    baseline, and the table goes to ``results_vs_<reference>.md`` (no chart) with a paired test per metric.
    With ``pool_with`` (other result folders) the runs of all the folders are summarised together and every file
    is named ``results_pooled...`` instead of ``results...``.
    """
    import numpy as np

    finished, counts = pooled_run_files([out, *pool_with]) if pool_with else (_finished_run_files(out), {})
    prefix = "results_pooled" if pool_with else "results"
    runs = load_runs(finished)
    if not runs:
        return "no finished runs"
    with open(out / f"{prefix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    order = [name for name in VARIANTS if any(run["variant"] == name for run in runs)]
    order += sorted({run["variant"] for run in runs} - set(order))
    by_variant = {name: {run["seed"]: run for run in runs if run["variant"] == name} for name in order}
    means = {name: {m: float(np.mean([r[m] for r in seeds.values()])) for m in METRICS} for name, seeds in by_variant.items()}
    baselines = [name for name in order if VARIANTS.get(name) and VARIANTS[name].baseline]
    best = {m: max(baselines, key=lambda name: means[name][m]) for m in METRICS} if baselines else {}
    if reference is not None:
        if reference not in by_variant:
            raise SystemExit(f"--reference={reference}: no finished runs of it in {out / 'runs'}"
                             + (" or the --pool_with folders" if pool_with else "") + "; "
                             f"finished variants: {', '.join(order)}")
        best = {m: reference for m in METRICS}
        baselines = [reference]

    def cell(name: str, metric: str) -> str:
        values = [run[metric] for run in by_variant[name].values()]
        if len(values) < 2:  # one seed: no spread to report
            return f"{values[0]:.4f}"
        return f"{np.mean(values):.4f} ± {float(np.std(values, ddof=1)):.4f}"

    lines = [f"### {title or dataset}", "",
             "| variant | seeds | " + " | ".join(_metric_label(m) for m in METRICS)
             + f" | improv. NDCG@20 vs {reference or 'best baseline'} | paired t-test p (NDCG@20) | best epoch | s/epoch |",
             "|---|---|" + "---|" * len(METRICS) + "---|---|---|---|"]
    for name in order:
        seeds = by_variant[name]
        improvement, p_value = "", ""
        if best and name not in baselines:
            other = best["ndcg@20"]
            improvement = f"{100 * (means[name]['ndcg@20'] / means[other]['ndcg@20'] - 1):+.1f}% vs {other}"
            shared_seeds = sorted(set(seeds) & set(by_variant[other]))
            if len(shared_seeds) >= 2:
                p = paired_p_value([seeds[s]["ndcg@20"] for s in shared_seeds],
                                   [by_variant[other][s]["ndcg@20"] for s in shared_seeds])
                p_value = "n/a" if p is None else f"{p:.3f}"
        epochs = "/".join(str(run["best_epoch"]) for run in seeds.values())
        speed = np.median([run["seconds_per_epoch"] for run in seeds.values()])
        lines.append(f"| {name} | {len(seeds)} | " + " | ".join(cell(name, m) for m in METRICS)
                     + f" | {improvement} | {p_value} | {epochs} | {speed:.1f} |")
    lines += ["", "Seeds: " + "; ".join(f"{name}: {', '.join(map(str, sorted(by_variant[name])))}" for name in order)
              + ". Mean ± sample std over seeds; a single value is one seed (no spread, no test)."]
    if pool_with:
        lines += ["", "Pooled from the finished runs of: " + "; ".join(f"{folder} ({count})" for folder, count
                                                                       in counts.items()) + "."]
    builds = semantic_builds_note(finished)
    if builds:
        lines += ["", builds]
    if best and reference is None:
        lines += ["", "Best baseline per metric: " + ", ".join(f"{m}: {best[m]}" for m in METRICS) + "."]
    if reference is not None:
        lines += ["", paired_tests(by_variant, order, reference)]
        by_group = group_paired_tests(finished, order, reference)
        if by_group:
            lines += ["", by_group]
    markdown = "\n".join(lines) + "\n"
    if reference is not None:
        (out / f"{prefix}_vs_{reference.replace('/', '_')}.md").write_text(markdown)
        return markdown
    (out / f"{prefix}.md").write_text(markdown)
    _plot(out / f"{prefix}.png", order, by_variant, dataset, title)
    _plot_curves(out / f"{prefix}_curves.png", finished, order, dataset, title)
    groups = group_summary(finished, order, title or dataset)
    if groups:
        (out / f"{prefix}_by_group.md").write_text(groups)
    return markdown


def semantic_builds_note(finished: FinishedRuns, listed: int = 3) -> str:
    """One paragraph on which builds of the semantic files the ``finished`` runs read.

    Every file is named with the first 8 hex digits of each sha256 the run files record and how many runs read
    it (the runs themselves when at most ``listed``). When a file was read in more than one build the note says so
    and names the variants whose seeds read different builds: a rebuild on another machine can move an SRA-CL
    cell by a few percent, so such rows do not compare like for like. Empty when no run file records its semantic
    files (run files written before they were recorded).
    """
    runs_by_sha: dict[str, dict[str, list[str]]] = {}  # file -> sha256 -> the runs that read it
    shas_by_variant: dict[str, dict[str, set[str]]] = {}  # variant -> file -> the sha256s its seeds read
    not_recorded = 0
    for variant, data in finished:
        if "semantic_files" not in data:
            not_recorded += 1
            continue
        for name, sha in ((data["semantic_files"] or {}).get("files") or {}).items():
            runs_by_sha.setdefault(name, {}).setdefault(sha, []).append(f"{variant} seed {data['seed']}")
            shas_by_variant.setdefault(variant, {}).setdefault(name, set()).add(sha)
    if not runs_by_sha:
        return ""

    def reads(runs: list[str]) -> str:
        count = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
        return f"{count}: {', '.join(runs)}" if len(runs) <= listed else count

    described = [f"{name} " + ", ".join(f"{sha[:8]} ({reads(runs)})" for sha, runs in
                                        sorted(by_sha.items(), key=lambda item: -len(item[1])))
                 for name, by_sha in sorted(runs_by_sha.items())]
    note = "Semantic files read (sha256, first 8 hex digits): " + "; ".join(described)
    if not_recorded:
        note += f"; {not_recorded} run file(s) predate this record"
    note += "."
    if any(len(by_sha) > 1 for by_sha in runs_by_sha.values()):
        mixed = [variant for variant, by_file in shas_by_variant.items() if any(len(shas) > 1 for shas in by_file.values())]
        note += (" **More than one build of the semantic files is in this table**"
                 + (f"; these variants mix builds across their seeds: {', '.join(mixed)}" if mixed else "")
                 + ". A rebuild on another machine can move an SRA-CL cell by a few percent; compare rows that read "
                   "different builds with care.")
    return note


def group_summary(
    finished: FinishedRuns, order: Sequence[str], title: str, metrics: Sequence[str] = ("hit@20", "ndcg@20")
) -> str:
    """Markdown tables of the per-group test metrics (``test_result_by_group`` of the runs), mean over seeds.

    Empty when no run has them (runs made before they were recorded).
    """
    import numpy as np

    grouped, labels_of = _runs_by_group(finished)
    sections = []
    for grouping, by_variant in grouped.items():
        labels = labels_of[grouping]
        users = {label: next(groups[label]["users"] for runs in by_variant.values() for groups in runs.values()
                             if label in groups) for label in labels}
        lines = [f"### {title}: test metrics by {grouping.replace('_', ' ')}", "",
                 "| variant | seeds | " + " | ".join(f"{label} ({users[label]} users) {_metric_label(m)}"
                                                   for label in labels for m in metrics) + " |",
                 "|---|---|" + "---|" * (len(labels) * len(metrics))]
        for variant in [name for name in order if name in by_variant]:
            runs = by_variant[variant]
            cells = [f"{np.mean([groups[label][m] for groups in runs.values() if label in groups]):.4f}"
                     for label in labels for m in metrics]
            lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    if not sections:
        return ""
    return "\n\n".join(sections) + "\n\nMean over seeds; groups as in `group_by_sequence_length` / " \
        "`group_by_target_popularity` (recbole_sracl/evaluation.py).\n"


def _inputs_match(run: dict[str, Any], reference: dict[str, Any]) -> str:
    """``same`` / ``different`` semantic files of two runs, ``none read`` or ``not recorded`` (older run files)."""
    if "semantic_files" not in run or "semantic_files" not in reference:
        return "not recorded"
    files = [(data["semantic_files"] or {}).get("files") for data in (run, reference)]
    if files[0] is None and files[1] is None:
        return "none read"
    return "same" if files[0] == files[1] else "different"


def _cpu_match(run: dict[str, Any], reference: dict[str, Any]) -> str:
    """``same``, ``<reference CPU> -> <rerun CPU>`` or ``not recorded``; CPU family / model (``cpu_id``) count
    where both runs recorded them (older run files only have the marketing name)."""
    machines = [data["machine"] for data in (run, reference)]
    models = [machine.get("cpu_model") for machine in machines]
    if None in models:
        return "not recorded"
    ids = [machine.get("cpu_id") for machine in machines]
    if None in ids:
        if models[0] != models[1]:
            return f"{models[1]} -> {models[0]}"
        return "same" if ids == [None, None] else "same name (family/model recorded for one run only)"
    labels = [f"{model} ({ident})" for model, ident in zip(models, ids)]
    return "same" if labels[0] == labels[1] else f"{labels[1]} -> {labels[0]}"


def _code_match(run: dict[str, Any], reference: dict[str, Any]) -> str:
    """``same`` (one commit, no local changes), ``<reference commit> -> <rerun commit>`` (short shas, ``+changes``
    where tracked files differed from the commit) or ``not recorded`` (older run files, or no git checkout)."""
    sources = [data.get("source") or {} for data in (run, reference)]
    if None in (sources[0].get("commit"), sources[1].get("commit")):
        return "not recorded"
    labels = [source["commit"][:7] + (" +changes" if source.get("modified") else "") for source in sources]
    return "same" if labels[0] == labels[1] and not sources[0].get("modified") else f"{labels[1]} -> {labels[0]}"


def reproduction_check(out: Path, reference: Path) -> str:
    """Compare every finished run in ``out`` with the run of the same variant and seed in ``reference``.

    Writes ``out/reproduction.md``: per run the reference and rerun test HR@20 / NDCG@20, the relative change,
    best epochs, best validation scores, whether the whole test result is identical, and whether the two runs read
    the same semantic files (sha256 from the run files) with the same code (git commit) on the same CPU (name, and
    family / model where both recorded them); returns the markdown.
    """
    import numpy as np

    references = dict(((variant, data["seed"]), data) for variant, data in _finished_run_files(reference))
    pairs = [(variant, data, references[variant, data["seed"]]) for variant, data in _finished_run_files(out)
             if (variant, data["seed"]) in references]
    if not pairs:
        raise SystemExit(f"--check_against={reference}: none of the finished runs in {out / 'runs'} has a "
                         f"finished run of the same variant and seed in {reference / 'runs'}")
    lines = [f"### Reruns in {out} against {reference}", "",
             "| run | HR@20 reference | HR@20 rerun | NDCG@20 reference | NDCG@20 rerun | change NDCG@20 "
             "| best epoch | best valid score | identical test result | semantic files | code | CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    changes, identical = [], 0
    for variant, run, ref in pairs:
        before, after = ref["test_result"]["ndcg@20"], run["test_result"]["ndcg@20"]
        change = 100 * (after / before - 1) if before else (0.0 if after == before else float("inf"))
        changes.append(change)
        same_result = run["test_result"] == ref["test_result"]
        identical += same_result
        lines.append(
            f"| {run_name(variant, run['seed'])} | {ref['test_result']['hit@20']:.4f} | {run['test_result']['hit@20']:.4f} "
            f"| {before:.4f} | {after:.4f} | {change:+.1f}% "
            f"| {ref['best_epoch']} -> {run['best_epoch']} | {ref['best_valid_score']:.4f} -> {run['best_valid_score']:.4f} "
            f"| {'yes' if same_result else 'no'} | {_inputs_match(run, ref)} | {_code_match(run, ref)} "
            f"| {_cpu_match(run, ref)} |")
    lines += ["", f"{len(pairs)} run(s) compared, {identical} with an identical test result; change of NDCG@20: "
              f"mean {np.mean(changes):+.1f}%, largest in size {max(changes, key=abs):+.1f}%."]
    markdown = "\n".join(lines) + "\n"
    (out / "reproduction.md").write_text(markdown)
    return markdown


def _plot(file: Path, order: list[str], by_variant: dict, dataset: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(order) + 4), 4.5))
    for axis, metric in zip(axes, ("hit@20", "ndcg@20")):
        values = [[run[metric] for run in by_variant[name].values()] for name in order]
        means = [np.mean(v) for v in values]
        errors = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        colours = ["#888888" if VARIANTS.get(name) and VARIANTS[name].baseline else "#1f77b4" for name in order]
        axis.bar(range(len(order)), means, yerr=errors, color=colours, capsize=3)
        axis.set_xticks(range(len(order)))
        axis.set_xticklabels(order, rotation=45, ha="right", fontsize=8)
        axis.set_title(_metric_label(metric))
        low = min(m - e for m, e in zip(means, errors))
        axis.set_ylim(max(0.0, low * 0.9), max(m + e for m, e in zip(means, errors)) * 1.03)
    figure.suptitle(title or f"{dataset}: test metrics, mean ± std over seeds (grey: baselines)")
    figure.tight_layout()
    figure.savefig(file, dpi=120)
    plt.close(figure)


def _plot_curves(file: Path, finished: FinishedRuns, order: list[str], dataset: str, title: str) -> None:
    """``results_curves.png`` (``file``): validation score and training loss per epoch, one line per run (when recorded).

    Run files written before learning curves were recorded are left out; nothing is written when no run has one.
    """
    curves: dict[str, list[dict[str, Any]]] = {}
    for variant, data in finished:
        if any(score is not None for score in data.get("epoch_valid_score") or []):
            curves.setdefault(variant, []).append(data)
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (valid_axis, loss_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab20")
    for index, variant in enumerate(name for name in order if name in curves):
        colour = colours(index % 20)
        runs = sorted(curves[variant], key=lambda run: run["seed"])
        for number, data in enumerate(runs):
            label = f"{variant} (seed {', '.join(str(run['seed']) for run in runs)})" if number == 0 else None
            points = [(epoch, score) for epoch, score in enumerate(data["epoch_valid_score"]) if score is not None]
            valid_axis.plot(*zip(*points), color=colour, linewidth=1, label=label)
            best = dict(points).get(data["best_epoch"])
            if best is not None:
                valid_axis.plot(data["best_epoch"], best, "o", color=colour, markersize=4)
            losses = [(epoch, sum(terms)) for epoch, terms in enumerate(data.get("epoch_train_loss") or []) if terms]
            if losses:
                loss_axis.plot(*zip(*losses), color=colour, linewidth=1, label=label)
    valid_axis.set(title="validation score (dot: best epoch)", xlabel="epoch")
    loss_axis.set(title="training loss (sum of terms, per epoch)", xlabel="epoch", yscale="log")
    valid_axis.legend(fontsize=7)
    figure.suptitle(title or f"{dataset}: learning curves, one line per seed")
    figure.tight_layout()
    figure.savefig(file, dpi=120)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variants", default=None,
                        help=f"variant and group names (groups: {', '.join(GROUPS)}), comma-separated; default: main")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)))
    parser.add_argument("--out", default=None, help="default: benchmarks/results/<dataset>/<today>")
    parser.add_argument("--workers", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / workers)")
    parser.add_argument("--config_files", default=None, help="yaml files given to every run")
    parser.add_argument("--title", default="", help="title of the markdown table and the chart")
    parser.add_argument("--summarise_only", action="store_true")
    parser.add_argument("--status", action="store_true",
                        help="print where every run in --out stands (finished, epochs done, best epoch, patience left) "
                        "and exit; with --variants also the runs not started yet")
    parser.add_argument("--reference", default=None, help="compare every variant with this one (e.g. SASRec) "
                        "instead of the best baseline; writes results_vs_<reference>.md")
    parser.add_argument("--pool_with", default=None,
                        help="other result folders, comma-separated: summarise their finished runs together with "
                        "those in --out (more seeds over several sessions); writes results_pooled* files in --out")
    parser.add_argument("--keep_checkpoints", action="store_true")
    parser.add_argument("--check_against", default=None,
                        help="a result folder (e.g. the committed one): compare every finished run here with its "
                        "variant and seed there; writes reproduction.md")
    args, shared = parser.parse_known_args(argv)
    args.variants_given = args.variants is not None
    if args.variants is None:
        args.variants = "main"
    if args.out is None:
        args.out = str(Path("benchmarks") / "results" / args.dataset / time.strftime("%Y-%m-%d"))
    if args.threads <= 0:
        args.threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    return args, shared


def main(argv: Sequence[str] | None = None) -> int:
    args, shared = parse_args(argv)
    for arg in shared:
        if not arg.startswith("--") or "=" not in arg:
            print(f"error: unrecognised argument '{arg}': shared settings look like --key=value", file=sys.stderr)
            return 2
    try:
        variants, seeds = planned_runs(args)
    except (KeyError, ValueError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    if args.status:
        planned = [run_name(variant.name, seed) for seed in seeds for variant in variants] if args.variants_given else []
        print(status_report(Path(args.out), planned))
        return 0
    if not args.summarise_only:
        run_all(args, shared)
    own_reference = args.reference
    if args.pool_with and args.reference:  # the reference may have runs only in the pooled folders
        own_variants = {run["variant"] for run in load_runs(_finished_run_files(Path(args.out)))}
        own_reference = args.reference if args.reference in own_variants else None
    print(summarise(Path(args.out), args.dataset, args.title, own_reference))
    if args.pool_with:
        pool_with = [Path(folder) for folder in args.pool_with.split(",") if folder]
        print(summarise(Path(args.out), args.dataset, args.title, args.reference, pool_with))
    if args.check_against:
        print(reproduction_check(Path(args.out), Path(args.check_against)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
