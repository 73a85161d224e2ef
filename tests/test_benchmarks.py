"""The comparison harness and the speed benchmark, end to end on the tiny dataset."""

import json
import subprocess
import sys

from conftest import REPO


def test_compare_runs_resumes_and_summarises(semantic_copy, tiny_yaml, tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--dataset=tiny", "--variants=SASRec,SRACL",
               "--seeds=1,2", f"--out={out}", "--workers=2", f"--config_files={tiny_yaml}",
               f"--data_path={semantic_copy}", "--epochs=1"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted(path.name for path in (out / "runs").glob("*.json"))
    assert runs == ["SASRec__seed1.json", "SASRec__seed2.json", "SRACL__seed1.json", "SRACL__seed2.json"]
    run = json.loads((out / "runs" / "SRACL__seed2.json").read_text())
    assert run["seed"] == 2 and run["machine"]["versions"]["recbole"] == "1.2.1" and run["epoch_seconds"]
    table = (out / "results.md").read_text()
    assert "| SRACL | 2 |" in table and "vs SASRec" in table and "±" in table
    assert (out / "results.png").stat().st_size > 1000 and (out / "results.csv").is_file()
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert "0 run(s) to do" in again.stdout  # finished runs are skipped
    assert len(json.loads((out / "harness.json").read_text())["invocations"]) == 2


def test_speed_benchmark_reports_ratios_to_sasrec(semantic_copy, tiny_yaml, tmp_path):
    out = tmp_path / "speed"
    process = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--dataset=tiny", "--models=SASRec,SRACL (cached)",
         "--epochs=1", f"--out={out}", f"--config_files={tiny_yaml}", f"--data_path={semantic_copy}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    (report,) = out.glob("tiny-*.json")
    results = json.loads(report.read_text())["results"]
    assert [r["name"] for r in results] == ["SASRec", "SRACL (cached)"]
    assert all(r["median_epoch_seconds"] > 0 and r["peak_memory_mb"] > 0 for r in results)
    assert "| SRACL (cached) |" in process.stdout
