"""Config layers, override parsing, the model registry and the run script's errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_sracl.config import Config, parse_overrides
from recbole_sracl.errors import ConfigError
from recbole_sracl.utils import get_model, get_trainer

REPO = Path(__file__).resolve().parents[1]


def test_precedence_recbole_then_overall_then_model_then_dataset_then_files_then_cli(tmp_path):
    # RecBole's default train_batch_size is 2048; our overall.yaml says 256
    assert Config("SASRec", "ml-100k")["train_batch_size"] == 256
    # RecBole's SASRec.yaml has no lmd; our DuoRec.yaml sets 0.1
    config = Config("DuoRec", "ml-100k")
    assert config["lmd_sem"] == 0.1 and config["MAX_ITEM_LIST_LENGTH"] == 20
    # dataset yaml beats overall: load_col of ml-100k lists the item text fields
    assert "movie_title" in config["load_col"]["item"]
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("lmd_sem: 0.3\nseed: 1\n")
    second.write_text("seed: 2\n")
    config = Config("DuoRec", "ml-100k", config_file_list=[str(first), str(second)], argv=["--seed=3"])
    assert config["lmd_sem"] == 0.3  # file beats model yaml
    assert config["seed"] == 3  # command line beats both files, later file beats earlier


def test_backbone_yaml_layers_are_loaded_for_sracl():
    config = Config("SRACL", "ml-100k", argv=["--backbone=GRU4Rec"])
    assert config["num_layers"] == 1 and config["dropout_prob"] == 0.3  # RecBole's GRU4Rec.yaml
    assert config["embedding_size"] == 64 and config["alpha"] == 0.1


def test_sys_argv_is_never_read(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--seed=999", "--epochs=7"])
    config = Config("SASRec", "ml-100k")
    assert config["seed"] == 2024 and config["epochs"] == 300


def test_override_values_are_parsed_safely():
    parsed = parse_overrides(["--a=0.1", "--b=[10,20]", "--c=True", "--d=some/path", "--e=__import__('os')",
                              "--f={'LS': 'valid_and_test'}", "--g=none"])
    assert parsed == {"a": 0.1, "b": [10, 20], "c": True, "d": "some/path", "e": "__import__('os')",
                      "f": {"LS": "valid_and_test"}, "g": None}
    with pytest.raises(ConfigError, match="--key=value"):
        parse_overrides(["epochs=3"])
    with pytest.raises(ConfigError, match="twice"):
        parse_overrides(["--seed=1", "--seed=2"])


def test_ml100k_keeps_the_users_data_path(tmp_path):
    config = Config("SASRec", "ml-100k", argv=[f"--data_path={tmp_path}"])
    assert config["data_path"] == os.path.join(str(tmp_path), "ml-100k")


def test_misspelt_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        Config("SRACL", "ml-100k", argv=["--alhpa=0.2"])


def test_bad_config_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config("SASRec", "ml-100k", config_file_list=[str(tmp_path / "missing.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config("SASRec", "ml-100k", config_file_list=[str(broken)])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must map keys"):
        Config("SASRec", "ml-100k", config_file_list=[str(listing)])


def test_registry_prefers_ours_and_falls_back_to_recbole():
    assert get_model("SRACL").__module__ == "recbole_sracl.model.sracl"
    assert get_model("CL4SRec").__module__ == "recbole_sracl.model.cl4srec"
    assert get_model("SASRec").__module__.startswith("recbole.model")
    with pytest.raises(ConfigError, match="Did you mean 'SASRec'") as error:
        get_model("sasrec")
    with pytest.raises(ConfigError, match="unknown model 'NoSuchModel'") as error:
        get_model("NoSuchModel")
    assert "GRU4Rec" in str(error.value) and "DuoRec" in str(error.value)


def test_every_trainer_we_hand_out_writes_safe_checkpoints():
    from recbole.utils import ModelType

    from recbole_sracl.trainer import CheckpointSafeMixin, Trainer

    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is Trainer
    assert issubclass(get_trainer(ModelType.KNOWLEDGE, "KGAT"), CheckpointSafeMixin)


def _run_script(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "run_recbole_sracl.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_run_script_unknown_model_and_missing_dataset_are_one_line_errors(tmp_path):
    unknown = _run_script("--model=NoSuchModel", "--dataset=ml-100k", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().count("\n") == 0 and "unknown model 'NoSuchModel'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    missing = _run_script("--model=SASRec", "--dataset=nope", f"--data_path={tmp_path}", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    error_lines = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "dataset 'nope' not found" in error_lines[0] and str(tmp_path / "nope" / "nope.inter") in error_lines[0]
    assert "--data_path" in error_lines[0]
