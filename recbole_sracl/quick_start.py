"""Train and evaluate one model on one dataset, like ``recbole.quick_start`` but without ray.

``main()`` is the command line behind ``run_recbole_sracl.py``; ``run()`` is the Python API.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from logging import getLogger
from typing import Any, Sequence

from recbole_sracl.errors import SRACLError

RESULT_FORMAT = "recbole_sracl-result-1"


def _make_run_dirs(config) -> None:
    """Create ./log/<model>/ and checkpoint_dir up front: RecBole's ``ensure_dir`` (exists, then makedirs) raises
    FileExistsError in all but one of several DDP processes that reach it at the same moment."""
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)


def _init_logging(config) -> None:
    """RecBole's logger (console + ./log/<model>/ file), replacing the handlers an earlier run in this process added."""
    from recbole.utils import init_logger

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_recbole_sracl", False)]:
        root.removeHandler(handler)
        handler.close()
    before = set(root.handlers)
    init_logger(config)
    if not root.handlers or set(root.handlers) == before:  # basicConfig is a no-op once root has handlers
        root.handlers.clear()
        init_logger(config)
    for handler in root.handlers:
        handler._recbole_sracl = True
    for noisy in ("httpx", "httpcore", "openai", "urllib3", "filelock", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _first_cpuinfo_block(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """``key: value`` pairs of the first processor in ``cpuinfo`` (Linux); empty where the file cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    if fields:
                        break  # the first processor's block is enough
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str | None]:
    """``cpu_model``: the CPU's marketing name (``model name`` of /proc/cpuinfo on Linux, else what ``platform``
    knows); ``cpu_id``: vendor, family, model and stepping, e.g. ``AuthenticAMD family 26 model 2 stepping 1``
    (``None`` where they cannot be read). Both come from one read of the first processor's block.

    Two CPUs with the same marketing name (``AMD EPYC``) can be different generations whose float kernels round
    differently, which changes the bytes of a semantic build; ``cpu_id`` tells them apart in run files and manifests.
    """
    fields = _first_cpuinfo_block(cpuinfo)
    parts = [fields.get(key) for key in ("vendor_id", "cpu family", "model", "stepping")]
    return {"cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_id": "{} family {} model {} stepping {}".format(*parts) if all(parts) else None}


def machine_info(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """Where a result was produced: host, CPU, GPU, thread count and package versions.

    ``extra_packages`` are distribution names (e.g. ``sentence-transformers``) whose installed versions are added
    to ``versions`` (``None`` when not installed) without importing them.
    """
    from importlib import metadata

    import numpy
    import pandas
    import recbole
    import torch

    from recbole_sracl import __version__

    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **cpu_info(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "versions": {
            "recbole_sracl": __version__, "recbole": recbole.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__,
        },
    }
    for package in extra_packages:
        try:
            info["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info["versions"][package] = None
    return info


def source_revision(directory: str | None = None) -> dict[str, Any]:
    """The git commit of the code that runs: ``commit`` (full sha) and ``modified`` (tracked files differ from it)
    of the checkout holding ``directory`` (default: this package's folder). Both ``None`` where git tracks no file
    in that folder (an installed wheel, even one in a virtual environment inside a checkout) or git is missing.

    Read it when a run starts: a checkout can move on (``git pull``, a commit) while a long run trains.
    """
    folder = directory or os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or not git("ls-files", "--", "."):
        return {"commit": None, "modified": None}
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "modified": None if changes is None else bool(changes.strip())}


def build_config(model, dataset, config_file_list=None, config_dict=None, argv=None):
    """Create the :class:`~recbole_sracl.config.Config` and validate model-specific values early."""
    from recbole_sracl.config import Config
    from recbole_sracl.evaluation import check_group_config

    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, argv=argv)
    check_group_config(config)
    validate = getattr(config.model_class, "validate_config", None)
    if validate is not None:
        validate(config)
    return config


def run_single(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    argv: Sequence[str] | None = None,
    saved: bool = True,
    resume: str | None = None,
    result_file: str | None = None,
    queue: Any = None,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` in this process, evaluate the best epoch on the test split.

    Returns:
        dict with ``test_result``, ``best_valid_result``, ``best_epoch``, ``epochs_run``, per-epoch training
        seconds and memory, the config and the machine; also written to ``result_file`` when given.
    """
    import torch
    from recbole.utils import get_flops, init_seed, set_color

    from recbole_sracl.data.utils import create_dataset, data_preparation
    from recbole_sracl.errors import ConfigError
    from recbole_sracl.evaluation import test_result_by_group, valid_metric_average
    from recbole_sracl.trainer import Trainer
    from recbole_sracl.utils import atomic_write_json, get_trainer

    started = time.time()
    source = source_revision()
    config = build_config(model, dataset, config_file_list, config_dict, argv)
    model_class = config.model_class
    init_seed(config["seed"], config["reproducibility"])
    _make_run_dirs(config)
    _init_logging(config)
    logger = getLogger()
    logger.info(config)

    prepare = getattr(model_class, "prepare_config", None)
    # e.g. SRACL: check/build the semantic files, register them with RecBole, say which files (hashes) it reads
    semantic_files = prepare(config) if prepare is not None else None
    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    train_data, valid_data, test_data = data_preparation(
        config, dataset_obj, getattr(model_class, "build_train_augmenter", None)
    )

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = model_class(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    try:
        from recbole.data.transform import construct_transform

        flops = get_flops(model_obj, dataset_obj, config["device"], logger, construct_transform(config))
        logger.info(set_color("FLOPs", "blue") + f": {flops}")
    except Exception as error:  # noqa: BLE001 - FLOPs are informative only; thop fails on some models
        logger.info(f"FLOPs not computed: {type(error).__name__}")

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    if valid_metric_average(config) != "users" and not isinstance(trainer, Trainer):
        raise ConfigError(f"valid_metric_average: {config['valid_metric_average']} needs recbole_sracl's Trainer; "
                          f"{config['model']} trains with {type(trainer).__name__}: set valid_metric_average: users")
    if resume:
        trainer.resume(resume, train_data)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    by_group = test_result_by_group(config, trainer.model, train_data._dataset, test_data)
    if by_group:
        logger.info(set_color("test result by group", "yellow") + f": {by_group}")
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    seconds = list(getattr(trainer, "epoch_seconds", []))
    result = {
        "format": RESULT_FORMAT,
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "best_valid_score": float(best_valid_score),
        "best_valid_result": _floats(best_valid_result),
        "test_result": _floats(test_result),
        "test_result_by_group": by_group,
        "best_epoch": getattr(trainer, "best_epoch", None),
        "epochs_run": getattr(trainer, "epochs_run", None),
        "epoch_seconds": seconds,
        "median_epoch_seconds": statistics.median(seconds) if seconds else None,
        "epoch_memory": list(getattr(trainer, "epoch_memory", [])),
        "epoch_train_loss": list(getattr(trainer, "epoch_train_loss", [])),
        "epoch_valid_score": list(getattr(trainer, "epoch_valid_score", [])),
        "best_model_file": trainer.saved_model_file if saved else None,
        "last_checkpoint_file": getattr(trainer, "last_checkpoint_file", None) if saved else None,
        "wall_seconds": time.time() - started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _invocation(),
        "source": source,
        "config_files": list(config_file_list or []),
        "semantic_files": semantic_files,
        "config": config.to_plain_dict(),
        "machine": machine_info(),
    }
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    if config["local_rank"] == 0:
        if result_file:
            atomic_write_json(result_file, result)
        if queue is not None:
            queue.put(result)
    return result


def _invocation() -> str | None:
    """The command line of this process as a user would type it (``python -m ...`` for module runs)."""
    if not sys.argv:
        return None
    program = os.path.basename(sys.argv[0])
    if program == "quick_start.py":
        program = "python -m recbole_sracl.quick_start"
    elif program.endswith(".py"):
        program = f"python {program}"
    return shlex.join([program] + sys.argv[1:]).replace(shlex.quote(program), program, 1)


def _floats(result: Any) -> Any:
    return None if result is None else {str(k): float(v) for k, v in dict(result).items()}


def _spawned(rank: int, kwargs: dict) -> None:
    kwargs = dict(kwargs)
    kwargs["config_dict"] = {**kwargs.get("config_dict", {}), "local_rank": rank}
    run_single(**kwargs)


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    argv: Sequence[str] | None = None,
    saved: bool = True,
    resume: str | None = None,
    result_file: str | None = None,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
) -> dict[str, Any] | None:
    """Train and test one model; ``nproc`` > 1 spawns DDP processes through RecBole's distributed settings."""
    kwargs = dict(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=dict(config_dict or {}),
                  argv=list(argv or []), saved=saved, resume=resume, result_file=result_file)
    if nproc == 1 and world_size <= 0:
        return run_single(**kwargs)
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    build_config(model, dataset, config_file_list, config_dict, argv)  # fail fast, before spawning
    queue = mp.get_context("spawn").SimpleQueue()
    kwargs["config_dict"].update(world_size=world_size, ip=ip, port=str(port), nproc=nproc, offset=group_offset)
    kwargs["queue"] = queue
    mp.spawn(_spawned, args=(kwargs,), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Known options; everything else must be ``--key=value`` property overrides."""
    parser = argparse.ArgumentParser(
        prog="run_recbole_sracl.py",
        description="Train and evaluate a model (SRACL, CL4SRec, DuoRec or any RecBole model) on a dataset. "
        "Any other --key=value overrides a property from the yaml layers.",
    )
    parser.add_argument("--model", "-m", default="SRACL", help="model name (default: SRACL)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="comma- or space-separated yaml files")
    parser.add_argument("--result_file", default=None, help="write the final metrics and run info as JSON here")
    parser.add_argument("--resume", default=None, help="continue an interrupted run from its '-last.pth' checkpoint")
    parser.add_argument("--nproc", type=int, default=1, help="processes for distributed (DDP) training")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all machines")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    parser.add_argument("--port", default="5678", help="port of the rank-0 machine")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; user errors print one line and return 2."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config_files = args.config_files.replace(",", " ").split() if args.config_files else None
    try:
        result = run(
            model=args.model, dataset=args.dataset, config_file_list=config_files, argv=overrides,
            resume=args.resume, result_file=args.result_file, nproc=args.nproc, world_size=args.world_size,
            ip=args.ip, port=args.port, group_offset=args.group_offset,
        )
    except SRACLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume=<the run's -last.pth checkpoint in checkpoint_dir>", file=sys.stderr)
        return 130
    if result is not None:
        print_result(result)
    return 0


def print_result(result: dict[str, Any]) -> None:
    """Print the final test metrics (and where they were saved) on standard output."""
    metrics = "  ".join(f"{key}: {value:.4f}" for key, value in (result["test_result"] or {}).items())
    print(f"test result ({result['model']} on {result['dataset']}, best epoch {result['best_epoch']}): {metrics}")
    print(json.dumps({"test_result": result["test_result"]}, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
