"""Bad input, secrets, exact resume and multi-process training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, free_port, tiny_overrides
from fake_llm import FakeLLMServer, always_ok

from recbole_sracl.errors import DatasetError, SemanticFilesError, SRACLError
from recbole_sracl.quick_start import run


def cli(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "run_recbole_sracl.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def assert_one_line_error(process, *fragments):
    assert process.returncode == 2, process.stderr[-2000:]
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def data(tmp_path, tiny_root):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    return root


# ---- bad input ------------------------------------------------------------------------------------------


def test_misnamed_field_is_a_one_line_error(data, tiny_yaml, tmp_path):
    inter = data / "tiny" / "tiny.inter"
    inter.write_text(inter.read_text().replace("timestamp:float", "time:float", 1))
    process = cli("--model=SASRec", "--dataset=tiny", f"--data_path={data}", f"--config_files={tiny_yaml}", cwd=tmp_path)
    assert_one_line_error(process, "has no field(s) timestamp", "tiny.inter", "header has: user_id, item_id, time)")


def test_missing_item_file_listed_in_load_col(data, tiny_yaml):
    (data / "tiny" / "tiny.item").unlink()
    with pytest.raises(DatasetError, match="tiny.item not found, but load_col lists 'item'"):
        run("SASRec", "tiny", [str(tiny_yaml)], argv=tiny_overrides(data))


def test_user_with_fewer_than_three_interactions(data, tiny_yaml, tmp_path):
    inter = data / "tiny" / "tiny.inter"
    inter.write_text(inter.read_text() + "lonely\ti1\t1\nlonely\ti2\t2\n")
    process = cli("--model=SASRec", "--dataset=tiny", f"--data_path={data}", f"--config_files={tiny_yaml}",
                  "--epochs=1", cwd=tmp_path)
    assert_one_line_error(process, "user 'lonely' has 2", 'user_inter_num_interval: "[3,inf)"')


def test_items_without_any_text(data, tiny_yaml):
    from recbole_sracl.config import Config
    from recbole_sracl.semantic.build import build_semantic_files

    item = data / "tiny" / "tiny.item"
    lines = item.read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\t\t\t\t"
    item.write_text("\n".join(lines) + "\n")
    config = Config("SASRec", "tiny", [str(tiny_yaml)], argv=[f"--data_path={data}"])
    with pytest.raises(DatasetError, match="have no text.*item 'i1'.*semantic_allow_missing_text"):
        build_semantic_files(config, show_progress=False)


def test_k_larger_than_the_stored_pool(semantic_copy, tiny_yaml):
    with pytest.raises(SemanticFilesError, match="k=60 but the semantic files of 'tiny' store only 39"):
        run("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy, "--k=60"))


def _edit_row(path: Path, row: int, edit) -> None:
    lines = path.read_text().splitlines()
    token, values = lines[row].split("\t")
    lines[row] = f"{token}\t{edit(values)}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "suffix, edit, message",
    [
        ("uemb", lambda v: v.replace(v.split()[3], "nan", 1), "contain NaN or inf"),
        ("uemb", lambda v: v.replace(v.split()[0], "inf", 1), "contain NaN or inf"),
        ("uemb", lambda v: " ".join(v.split()[:-1]), "has 383 values, expected dimension 384"),
        ("unbr", lambda v: v + " ghost-user", "neighbour id(s) ['ghost-user'] are not in the user pool"),
        ("inbr", lambda v: v.replace(v.split()[0], "i999", 1), "neighbour id(s) ['i999'] are not in the item pool"),
        ("unbr", lambda v: v.replace(v.split()[1], v.split()[0]), "was modified after it was built"),
    ],
    ids=["nan", "inf", "wrong-dimension", "unknown-user", "unknown-item", "edited"],
)
def test_damaged_semantic_files_are_refused(suffix, edit, message, semantic_copy, tiny_yaml, tmp_path):
    _edit_row(semantic_copy / "tiny" / f"tiny.{suffix}", 3, edit)
    process = cli("--model=SRACL", "--dataset=tiny", f"--data_path={semantic_copy}", f"--config_files={tiny_yaml}",
                  "--epochs=1", cwd=tmp_path)
    assert_one_line_error(process, message, "semantic build --dataset=tiny")


def test_prefix_mode_without_prefix_files_names_the_flag_that_builds_them(semantic_copy, tiny_yaml, tmp_path):
    manifest_file = semantic_copy / "tiny" / "tiny.semantic.json"
    manifest = json.loads(manifest_file.read_text())
    for name in ("tiny.pemb", "tiny.pnbr"):  # as if built without --user_granularity=prefix
        del manifest["files"][name]
        (semantic_copy / "tiny" / name).unlink()
    manifest_file.write_text(json.dumps(manifest))
    process = cli("--model=SRACL", "--dataset=tiny", f"--data_path={semantic_copy}", f"--config_files={tiny_yaml}",
                  "--user_granularity=prefix", "--epochs=1", cwd=tmp_path)
    assert_one_line_error(process, "tiny.pemb is missing", "semantic build --dataset=tiny",
                          "--user_granularity=prefix")
    assert cli("--model=SRACL", "--dataset=tiny", f"--data_path={semantic_copy}", f"--config_files={tiny_yaml}",
               "--epochs=1", "--state=WARNING", cwd=tmp_path).returncode == 0  # the per-user files still serve


def test_missing_semantic_files_print_the_build_command(data, tiny_yaml, tmp_path):
    process = cli("--model=SRACL", "--dataset=tiny", f"--data_path={data}", f"--config_files={tiny_yaml}", cwd=tmp_path)
    assert_one_line_error(process, "no semantic files for 'tiny'",
                          f"python -m recbole_sracl.semantic build --dataset=tiny --data_path={data} "
                          f"--config_files={tiny_yaml}")


def test_pickled_recbole_checkpoints_are_refused(tmp_path):
    from recbole_sracl.trainer import load_checkpoint

    path = tmp_path / "old.pth"
    torch.save({"config": object()}, path)
    with pytest.raises(SRACLError, match="not a checkpoint written by recbole_sracl"):
        load_checkpoint(path)


# ---- secrets --------------------------------------------------------------------------------------------


def test_the_api_key_is_written_nowhere(data, tiny_yaml, tmp_path, monkeypatch):
    from recbole_sracl.config import Config
    from recbole_sracl.errors import LLMError
    from recbole_sracl.semantic.build import build_semantic_files

    secret = "sk-FAKE-0123456789-secret"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    config = Config("SRACL", "tiny", [str(tiny_yaml)], argv=[f"--data_path={data}", "--semantic_backoff_seconds=0.01"])
    with FakeLLMServer(always_ok, api_key="another-key") as server:  # first a rejected key: the server echoes it
        with pytest.raises(LLMError) as error:
            build_semantic_files(config, show_progress=False, llm="openai", base_url=server.base_url)
        assert secret not in str(error.value)
    with FakeLLMServer(always_ok, api_key=secret) as server:
        build_semantic_files(config, show_progress=False, llm="openai", base_url=server.base_url, save_texts=True)
    run("SRACL", "tiny", [str(tiny_yaml)], argv=tiny_overrides(data, "--state=INFO"),
        result_file=str(tmp_path / "result.json"))
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".log" for path in written) and any(path.suffix == ".pth" for path in written)
    assert any(path.name == "tiny.llm_cache.jsonl" for path in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


# ---- resume ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["DuoRec", "SRACL"])
def test_resumed_run_matches_an_uninterrupted_one(model, semantic_copy, tiny_yaml, tmp_path, monkeypatch):
    from recbole_sracl import trainer as trainer_module

    settings = tiny_overrides(semantic_copy, "--epochs=4", *(["--neighbour_encoding=cached"] if model == "SRACL" else []))
    full = run(model, "tiny", [str(tiny_yaml)], argv=settings + [f"--checkpoint_dir={tmp_path / 'a'}"])

    original = trainer_module.Trainer._save_last_checkpoint

    def crash_after_second_epoch(self, epoch, train_data, finished):
        original(self, epoch, train_data, finished)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_save_last_checkpoint", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(model, "tiny", [str(tiny_yaml)], argv=settings + [f"--checkpoint_dir={tmp_path / 'b'}"])
    monkeypatch.setattr(trainer_module.Trainer, "_save_last_checkpoint", original)
    (last,) = (tmp_path / "b").glob("*-last.pth")
    resumed = run(model, "tiny", [str(tiny_yaml)], argv=settings + [f"--checkpoint_dir={tmp_path / 'b'}"],
                  resume=str(last))
    assert resumed["epochs_run"] == 4 and len(resumed["epoch_seconds"]) == 4
    assert resumed["epoch_train_loss"] == full["epoch_train_loss"] and len(full["epoch_train_loss"]) == 4
    assert resumed["epoch_valid_score"] == full["epoch_valid_score"] and None not in full["epoch_valid_score"]
    assert resumed["best_valid_result"] == full["best_valid_result"]
    assert resumed["test_result"] == full["test_result"]
    weights_a = torch.load(full["best_model_file"], weights_only=True)["state_dict"]
    weights_b = torch.load(resumed["best_model_file"], weights_only=True)["state_dict"]
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_resuming_from_a_best_checkpoint_is_refused(tiny_root, tiny_yaml, tmp_path):
    result = run("SASRec", "tiny", [str(tiny_yaml)], argv=tiny_overrides(tiny_root))
    with pytest.raises(SRACLError, match="resume from the matching '-last.pth' file"):
        run("SASRec", "tiny", [str(tiny_yaml)], argv=tiny_overrides(tiny_root), resume=result["best_model_file"])


# ---- distributed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["SRACL", "CL4SRec", "DuoRec"])
def test_two_process_cpu_training(model, semantic_copy, tiny_yaml, tmp_path):
    process = cli(f"--model={model}", "--dataset=tiny", f"--data_path={semantic_copy}", f"--config_files={tiny_yaml}",
                  "--epochs=1", "--nproc=2", f"--port={free_port()}", f"--result_file={tmp_path / 'r.json'}",
                  cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    import json

    result = json.loads((tmp_path / "r.json").read_text())
    assert result["config"]["world_size"] == 2 and result["config"]["dist_backend"] == "gloo"
    assert all(0 <= value <= 1 for value in result["test_result"].values())
    assert np.isfinite(list(result["test_result"].values())).all()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/lib/recbole_sracl/quick_start.py", "--model=SRACL", "--title=a b"],
         "python -m recbole_sracl.quick_start --model=SRACL '--title=a b'"),
        (["run_recbole_sracl.py", "--model=DuoRec"], "python run_recbole_sracl.py --model=DuoRec"),
    ],
)
def test_result_files_record_a_command_that_can_be_retyped(argv, expected, monkeypatch):
    from recbole_sracl.quick_start import _invocation

    monkeypatch.setattr(sys, "argv", argv)
    assert _invocation() == expected
