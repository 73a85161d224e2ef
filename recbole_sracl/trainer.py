"""Trainers whose checkpoints load with ``torch.load(weights_only=True)`` and resume exactly.

RecBole 1.2.1 pickles its ``Config`` into checkpoints, which torch >= 2.6 refuses to load by default, so
its own ``Trainer.evaluate(load_best_model=True)`` fails. Our checkpoints hold only tensors and plain
Python values (the config as a JSON-safe dict). The training loop also writes a ``-last`` checkpoint after
every epoch with the optimizer, early-stopping state and every random-generator state, so ``--resume``
continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from recbole.evaluator import Evaluator
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import dict2str, early_stopping, get_local_time, set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_sracl.errors import SRACLError
from recbole_sracl.evaluation import valid_metric_average

CHECKPOINT_FORMAT = "recbole_sracl-checkpoint-1"
EPOCH_FILE = re.compile(r"-epoch(\d+)\.pth$")  # the end of Trainer.epoch_name


def _plain_number(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _plain_result(result: Any) -> Any:
    return None if result is None else {str(key): float(_plain_number(val)) for key, val in result.items()}


def rng_state() -> dict[str, Any]:
    """Every global random state a training epoch draws from, as weights-only-safe values."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomically(payload: dict, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and a rename: never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        SRACLError: the file is missing or is not a recbole_sracl checkpoint (e.g. a pickled RecBole one).
    """
    if not Path(path).is_file():
        raise SRACLError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a safe checkpoint"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SRACLError(
            f"{path} is not a checkpoint written by recbole_sracl (weights-only load failed: {first_line}); "
            f"start a new run instead of resuming from it"
        ) from None


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on GPU, sampled process RSS on CPU (MB)."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval = torch.device(device), interval
        self.peak_mb = self.extra_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        process = psutil.Process()
        self._base = self._peak = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            import psutil

            peak = max(self._peak, psutil.Process().memory_info().rss)
        self.peak_mb = peak / 2**20
        self.extra_mb = (peak - self._base) / 2**20


class CheckpointSafeMixin:
    """Weights-only checkpoints and CPU (gloo) DDP for any RecBole trainer class."""

    def __init__(self, config, model):
        distributed_cpu = not config["single_spec"] and config["device"].type == "cpu"
        if distributed_cpu:  # RecBole wraps the model with device_ids=[rank], which only works on CUDA
            config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            if distributed_cpu:
                config["single_spec"] = False
        if distributed_cpu:
            self.distributed_model = DistributedDataParallel(self.model)
        # unique per run: several runs may start in the same second (benchmarks, tests)
        name = [f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth"]
        if not config["single_spec"]:  # every rank must read the file rank 0 writes
            torch.distributed.broadcast_object_list(name, src=0)
        name = name[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self.best_epoch = -1

    @property
    def is_main_process(self) -> bool:
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        from recbole_sracl.config import Config

        config = self.config.to_plain_dict() if isinstance(self.config, Config) else {"model": self.config["model"]}
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(_plain_number(self.best_valid_score)),
            "best_valid_result": _plain_result(self.best_valid_result),
            "best_epoch": int(self.best_epoch),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.is_main_process:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_atomically(self._checkpoint(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        checkpoint = load_checkpoint(resume_file, self.device)
        self._restore(checkpoint)
        self.saved_model_file = str(resume_file)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _restore(self, checkpoint: dict) -> None:
        saved_model = checkpoint.get("config", {}).get("model")
        if saved_model and saved_model.lower() != self.config["model"].lower():
            raise SRACLError(
                f"the checkpoint was trained with model {saved_model}, not {self.config['model']}; "
                f"resume with --model={saved_model}"
            )
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.best_epoch = checkpoint.get("best_epoch", -1)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and not self.config["single_spec"]:
            torch.distributed.barrier()  # rank 0 may still be writing the best checkpoint
        if load_best_model:
            checkpoint = load_checkpoint(model_file or self.saved_model_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


class TopKKeepingEvaluator(Evaluator):
    """RecBole's evaluator that also keeps the per-row top-k hit matrix (``[rows, k]``, 1 where the item at that
    position is a target) of the split it evaluated last, so the trainer can regroup one validation without ranking
    it again. RecBole's collector gathers it as ``rec.topk``, whose last column (each row's number of targets) is
    dropped."""

    last_hits: np.ndarray | None = None

    def evaluate(self, dataobject):
        self.last_hits = dataobject.get("rec.topk").numpy()[:, :-1] if "rec.topk" in dataobject else None
        return super().evaluate(dataobject)


class Trainer(CheckpointSafeMixin, RecBoleTrainer):
    """RecBole's trainer with safe checkpoints, exact resume, epoch hooks, timing and peak memory.

    Per epoch it calls ``model.on_train_epoch_start(epoch)`` when the model defines it (SRACL refreshes its
    neighbour cache there), and records training seconds and peak memory in ``epoch_seconds``/``epoch_memory``, the
    loss terms in ``epoch_train_loss`` and the validation score in ``epoch_valid_score`` (``None`` where an epoch
    was not evaluated): the learning curve that result files keep after logs are gone. With
    ``save_epoch_checkpoints`` it also keeps every epoch's weights (:meth:`epoch_name`) for ``benchmarks/epochs.py``.
    With ``valid_metric_average: popularity_groups`` the early-stopping and model-selection score is
    :func:`~recbole_sracl.evaluation.group_balanced_score` of the ranks that RecBole's validation has just collected
    (the logged validation result stays RecBole's).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.evaluator = TopKKeepingEvaluator(config)
        self.last_checkpoint_file = self._last_name(self.saved_model_file)
        self.epoch_seconds: list[float] = []
        self.epoch_memory: list[dict[str, float]] = []
        self.epoch_train_loss: list[list[float]] = []
        self.epoch_valid_score: list[float | None] = []
        self.epochs_run = 0
        self.finished = False
        # training popularity of each validation row's target; set by fit() for valid_metric_average: popularity_groups
        self.valid_target_popularity: np.ndarray | None = None

    @staticmethod
    def _last_name(best_file: str) -> str:
        return f"{best_file.removesuffix('.pth')}-last.pth"

    @staticmethod
    def epoch_name(best_file: str, epoch: int) -> str:
        """Where ``save_epoch_checkpoints`` keeps epoch ``epoch``'s weights, next to the best-model file."""
        return f"{best_file.removesuffix('.pth')}-epoch{epoch:03d}.pth"

    @staticmethod
    def epoch_of_name(path: str | os.PathLike) -> int | None:
        """The epoch in a file name made by :meth:`epoch_name`; ``None`` for any other name."""
        named = EPOCH_FILE.search(os.path.basename(path))
        return int(named.group(1)) if named else None

    def _save_last_checkpoint(self, epoch: int, train_data, finished: bool) -> None:
        if not self.is_main_process:
            return
        state = self._checkpoint(epoch)
        augmenter = getattr(train_data, "augmenter", None)
        state.update(
            best_model_file=str(self.saved_model_file),
            finished=bool(finished),
            rng=rng_state(),
            loader_generator=train_data.generator.get_state(),
            augmenter=augmenter.state_dict() if augmenter is not None else None,
            epoch_seconds=list(self.epoch_seconds),
            epoch_memory=list(self.epoch_memory),
            epoch_train_loss=list(self.epoch_train_loss),
            epoch_valid_score=list(self.epoch_valid_score),
            train_loss={str(key): float(value) for key, value in self.train_loss_dict.items()},
        )
        save_atomically(state, self.last_checkpoint_file)

    def resume(self, last_file: str | os.PathLike, train_data) -> None:
        """Continue from a ``-last`` checkpoint: weights, optimizer, early stopping and random states."""
        checkpoint = load_checkpoint(last_file, self.device)
        if "rng" not in checkpoint:
            raise SRACLError(
                f"{last_file} is a best-model checkpoint; resume from the matching '-last.pth' file"
            )
        self._restore(checkpoint)
        set_rng_state(checkpoint["rng"])
        train_data.generator.set_state(checkpoint["loader_generator"])
        augmenter = getattr(train_data, "augmenter", None)
        if augmenter is not None and checkpoint.get("augmenter") is not None:
            augmenter.load_state_dict(checkpoint["augmenter"])
        self.saved_model_file = checkpoint["best_model_file"]
        self.last_checkpoint_file = str(last_file)
        self.finished = bool(checkpoint.get("finished"))
        self.epoch_seconds = list(checkpoint.get("epoch_seconds", []))
        self.epoch_memory = list(checkpoint.get("epoch_memory", []))
        self.train_loss_dict = {int(key): value for key, value in checkpoint.get("train_loss", {}).items()}
        self.epochs_run = self.start_epoch
        # checkpoints written before the curves were recorded: pad so that entry i stays epoch i
        losses, scores = checkpoint.get("epoch_train_loss", []), checkpoint.get("epoch_valid_score", [])
        self.epoch_train_loss = [[] for _ in range(self.start_epoch - len(losses))] + list(losses)
        self.epoch_valid_score = [None] * (self.start_epoch - len(scores)) + list(scores)
        self.logger.info(f"Resumed from {last_file}: continuing at epoch {self.start_epoch}")

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if self.valid_target_popularity is not None:
            from recbole_sracl.evaluation import first_hit_ranks, group_balanced_score

            valid_score = group_balanced_score(first_hit_ranks(self.evaluator.last_hits), self.valid_target_popularity,
                                               self.config["group_by_target_popularity"], self.valid_metric,
                                               self.config["metric_decimal_place"])
        return valid_score, valid_result

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose: bool = True,
        saved: bool = True,
        show_progress: bool = False,
        callback_fn: Callable[[int, float], None] | None = None,
    ):
        self.eval_collector.data_collect(train_data)
        if valid_data and valid_metric_average(self.config) == "popularity_groups":
            from recbole_sracl.data.sequences import training_histories
            from recbole_sracl.evaluation import item_popularity, split_targets

            dataset = train_data._dataset
            popularity = item_popularity(training_histories(dataset), dataset.item_num)
            self.valid_target_popularity = popularity[split_targets(valid_data)]
        if self.config["train_neg_sample_args"].get("dynamic", False):
            train_data.get_model(self.model)
        epoch_start_hook = getattr(self.model, "on_train_epoch_start", None)
        for epoch_idx in range(self.start_epoch, self.epochs):
            if self.finished:
                break
            if epoch_start_hook is not None:
                epoch_start_hook(epoch_idx)
            with PeakMemory(self.device) as memory:
                start = time.perf_counter()
                train_loss = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
                seconds = time.perf_counter() - start
            self.epoch_seconds.append(seconds)
            self.epoch_memory.append({"peak_mb": memory.peak_mb, "extra_mb": memory.extra_mb})
            terms = train_loss if isinstance(train_loss, tuple) else (train_loss,)
            self.train_loss_dict[epoch_idx] = sum(terms)
            self.epoch_train_loss.append([float(term) for term in terms])
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch_idx, 0.0, seconds, train_loss))
            self._add_train_loss_to_tensorboard(epoch_idx, train_loss)

            stop, valid_score = False, None
            if self.eval_step <= 0 or not valid_data:
                self.best_epoch = epoch_idx
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
            elif (epoch_idx + 1) % self.eval_step == 0:
                valid_start = time.perf_counter()
                valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
                self.best_valid_score, self.cur_step, stop, improved = early_stopping(
                    valid_score, self.best_valid_score, self.cur_step,
                    max_step=self.stopping_step, bigger=self.valid_metric_bigger,
                )
                if verbose:
                    self.logger.info(
                        set_color(f"epoch {epoch_idx} evaluating", "green")
                        + f" [time: {time.perf_counter() - valid_start:.2f}s, valid_score: {valid_score:f}]"
                    )
                    self.logger.info(set_color("valid result", "blue") + ": \n" + dict2str(valid_result))
                self.tensorboard.add_scalar("Vaild_score", valid_score, epoch_idx)
                if improved:  # update first: the best-model checkpoint records its own epoch and result
                    self.best_valid_result = valid_result
                    self.best_epoch = epoch_idx
                    if saved:
                        self._save_checkpoint(epoch_idx, verbose=verbose)
            self.epoch_valid_score.append(None if valid_score is None else float(valid_score))
            self.epochs_run = epoch_idx + 1
            self.finished = stop
            if saved:
                self._save_last_checkpoint(epoch_idx, train_data, finished=stop)
                if self.config["save_epoch_checkpoints"]:
                    self._save_checkpoint(epoch_idx, verbose=False,
                                          saved_model_file=self.epoch_name(self.saved_model_file, epoch_idx))
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            if stop:
                if verbose:
                    self.logger.info(f"Finished training, best eval result in epoch {self.best_epoch}")
                break
        self._add_hparam_to_tensorboard(self.best_valid_score)
        return self.best_valid_score, self.best_valid_result


def make_safe_trainer(trainer_class: type) -> type:
    """Our :class:`Trainer` for RecBole's default trainer; a checkpoint-safe subclass for any other."""
    if trainer_class is RecBoleTrainer:
        return Trainer
    if issubclass(trainer_class, CheckpointSafeMixin):
        return trainer_class
    return type(f"Safe{trainer_class.__name__}", (CheckpointSafeMixin, trainer_class), {})
