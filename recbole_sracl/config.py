"""RecBole's ``Config`` with our yaml layers, and nothing RecBole reads behind your back.

Precedence, lowest first::

    RecBole's defaults (overall, RecBole's model yaml, its dataset yaml, quick-start sequential settings)
    < RecBole's yaml of the backbone (models with a ``backbone`` key, e.g. SRACL)
    < properties/overall.yaml < properties/model/<backbone>.yaml < properties/model/<model>.yaml
    < properties/dataset/<dataset>.yaml
    < config files (``--config_files``) < ``config_dict`` < command-line overrides (``--key=value``)

Differences from RecBole's ``Config``, each on purpose:

- command-line overrides come from the ``argv`` argument, never from ``sys.argv``;
- override values are parsed with ``ast.literal_eval`` (RecBole uses ``eval``);
- yaml is parsed with a private ``SafeLoader`` subclass (RecBole patches PyYAML's global ``FullLoader``);
- ``data_path`` is honoured for ``ml-100k`` too (RecBole forces its bundled copy inside site-packages);
- distributed runs pick ``gloo`` on CPU (RecBole hard-codes NCCL and CUDA);
- bad files, unknown models and misspelt keys raise :class:`~recbole_sracl.errors.ConfigError`.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from functools import lru_cache
from logging import getLogger
from pathlib import Path
from typing import Any, Sequence

import yaml
from recbole.config import Config as RecBoleConfig

from recbole_sracl.errors import ConfigError
from recbole_sracl.utils import get_model, properties_dir

_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 needs a dot), like RecBole's loader."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789."))

# keys RecBole or our code set at run time, never found in a yaml file
_RUNTIME_KEYS = {
    "model", "dataset", "config_files", "local_rank", "nproc", "world_size", "offset", "ip", "port",
    "dist_backend", "single_spec", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "encoding",
    "valid_neg_sample_args", "test_neg_sample_args", "reg_weight", "result_file", "resume",
}


def parse_override_value(text: str) -> Any:
    """Turn a command-line value into a Python value: ``0.1`` -> float, ``[10,20]`` -> list, ``abc`` -> str."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if lowered in {"none", "null", "~"}:
            return None
        return text


def parse_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``--key=value`` arguments into a dict of Python values.

    Raises:
        ConfigError: an argument is not of the form ``--key=value`` or a key is given twice with two values.
    """
    overrides: dict[str, Any] = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg or arg.startswith("--="):
            raise ConfigError(f"unrecognised argument '{arg}': property overrides look like --key=value")
        key, raw = arg[2:].split("=", 1)
        value = parse_override_value(raw)
        if key in overrides and overrides[key] != value:
            raise ConfigError(f"--{key} is given twice with different values ({overrides[key]!r} and {value!r})")
        overrides[key] = value
    return overrides


def load_yaml_file(path: str | os.PathLike) -> dict:
    """Read one yaml config file into a dict.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or is not a mapping of keys to values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map keys to values (key: value per line), not a {type(data).__name__}")
    return data


@lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Every key any RecBole or recbole_sracl yaml defines, plus the run-time keys."""
    import recbole
    from recbole.utils import argument_list

    keys = set(_RUNTIME_KEYS)
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    roots = [Path(recbole.__file__).parent / "properties", properties_dir()]
    for root in roots:
        for path in root.rglob("*.yaml"):
            try:
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict):
                keys.update(data)
    return frozenset(keys)


class Config(RecBoleConfig):
    """RecBole ``Config`` plus recbole_sracl's yaml layers (see the module docstring for the precedence).

    Args:
        model: model name or class; ``None`` reads ``model`` from the files/dict/overrides.
        dataset: dataset name; ``None`` reads ``dataset`` from the files/dict/overrides.
        config_file_list: yaml files, later files override earlier ones.
        config_dict: parameters given in code.
        argv: command-line style overrides (``["--epochs=1", "--seed=7"]``); ``sys.argv`` is never read.
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: Sequence[str] | None = None,
        config_dict: dict | None = None,
        argv: Sequence[str] | None = None,
    ):
        self._cli_overrides = list(argv or [])
        self.config_file_list = [str(path) for path in config_file_list or []]
        super().__init__(
            model=model,
            dataset=dataset,
            config_file_list=list(config_file_list or []),
            config_dict=dict(config_dict or {}),
        )
        self._check_unknown_keys()

    # ---- RecBole hooks -----------------------------------------------------------------------------------

    def compatibility_settings(self) -> None:
        """RecBole code uses numpy aliases removed in numpy 1.24/2.0; define them (works on numpy 1 and 2)."""
        import numpy as np

        for alias, target in {
            "bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
            "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_,
        }.items():
            setattr(np, alias, target)

    def _build_yaml_loader(self):
        return _YamlLoader

    def _convert_config_dict(self, config_dict: dict) -> dict:
        return {
            key: parse_override_value(value) if isinstance(value, str) else value
            for key, value in config_dict.items()
        }

    def _load_config_files(self, file_list):
        merged: dict = {}
        for path in file_list or []:
            merged.update(load_yaml_file(path))
        return merged

    def _load_cmd_line(self):
        return parse_overrides(self._cli_overrides)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("no model given: pass --model=NAME (e.g. --model=SASRec)")
        if isinstance(model, str):
            model_name, model_class = model, get_model(model)
        else:
            model_name, model_class = model.__name__, model
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("no dataset given: pass --dataset=NAME (e.g. --dataset=ml-100k)")
        return model_name, model_class, str(dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        ours = properties_dir()
        backbone = self._backbone_name(model, model_class)
        layers = [ours / "overall.yaml"]
        if backbone:
            import recbole

            recbole_backbone = Path(recbole.__file__).parent / "properties" / "model" / f"{backbone}.yaml"
            if recbole_backbone.is_file():
                self.internal_config_dict.update(load_yaml_file(recbole_backbone))
            layers.append(ours / "model" / f"{backbone}.yaml")
        layers += [ours / "model" / f"{model}.yaml", ours / "dataset" / f"{dataset}.yaml"]
        for path in layers:
            if path.is_file():
                values = load_yaml_file(path)
                self.internal_config_dict.update(values)
                if path.parent.name == "dataset":
                    self.parameters["Dataset"] += [key for key in values if key not in self.parameters["Dataset"]]

    def _set_default_parameters(self):
        base_path = self.final_config_dict.get("data_path") or "dataset/"
        super()._set_default_parameters()
        # RecBole points ml-100k at its copy inside site-packages; keep the user's data folder instead.
        self.final_config_dict["data_path"] = os.path.join(base_path, self.dataset)

    def _init_device(self):
        import torch

        config = self.final_config_dict
        gpu_id = config.get("gpu_id", "")
        gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        config["gpu_id"] = gpu_id
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        use_cuda = bool(config.get("use_gpu", True)) and len(gpu_id) > 0 and torch.cuda.is_available()
        if "local_rank" not in config:
            config["single_spec"] = True
            config["local_rank"] = 0
            config["device"] = torch.device("cuda") if use_cuda else torch.device("cpu")
            return
        backend = config.get("dist_backend") or ("nccl" if use_cuda else "gloo")
        if use_cuda and torch.cuda.device_count() < config["nproc"]:
            raise ConfigError(
                f"nproc={config['nproc']} but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(gpu_id='{gpu_id}'); lower --nproc or set --use_gpu=False to run on CPU with gloo"
            )
        torch.distributed.init_process_group(
            backend=backend,
            rank=config["local_rank"] + config["offset"],
            world_size=config["world_size"],
            init_method=f"tcp://{config['ip']}:{config['port']}",
        )
        config["dist_backend"] = backend
        config["single_spec"] = False
        if use_cuda:
            config["device"] = torch.device("cuda", config["local_rank"])
            torch.cuda.set_device(config["local_rank"])
        else:
            config["device"] = torch.device("cpu")
        if config["local_rank"] != 0:
            config["state"] = "error"
            config["show_progress"] = False
            config["verbose"] = False

    # ---- ours ----------------------------------------------------------------------------------------------

    def _backbone_name(self, model: str, model_class: type) -> str | None:
        """The backbone a wrapper model (e.g. SRACL) trains, read before the yaml layers are merged."""
        if not getattr(model_class, "has_backbone", False):
            return None
        if "backbone" in self.external_config_dict:
            return str(self.external_config_dict["backbone"])
        model_yaml = properties_dir() / "model" / f"{model}.yaml"
        if model_yaml.is_file():
            backbone = load_yaml_file(model_yaml).get("backbone")
            if backbone:
                return str(backbone)
        return getattr(model_class, "default_backbone", None)

    def _check_unknown_keys(self) -> None:
        """Reject misspelt keys given by the user (``--alhpa=0.1``); warn about keys nothing defines."""
        valid = known_keys()
        for key in self.external_config_dict:
            if key in valid:
                continue
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.8)
            if close:
                raise ConfigError(f"unknown config key '{key}': did you mean '{close[0]}'?")
            getLogger(__name__).warning(f"config key '{key}' is not used by RecBole or recbole_sracl yamls")

    def to_plain_dict(self) -> dict[str, Any]:
        """The final settings as JSON-safe values (devices and enums become strings)."""
        return {key: _plain(value) for key, value in self.final_config_dict.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    return str(value)
