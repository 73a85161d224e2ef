"""The comparison harness and the speed benchmark, end to end on the tiny dataset."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from recbole_sracl.semantic.files import read_embedding_file


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
    assert run["machine"]["cpu_model"] and "cpu_id" in run["machine"]
    from recbole_sracl.quick_start import source_revision

    assert run["source"] == source_revision()  # the commit of this checkout (None, None when installed from a wheel)
    assert json.loads((out / "harness.json").read_text())["invocations"][0]["source"] == run["source"]
    table = (out / "results.md").read_text()
    assert "| SRACL | 2 |" in table and "vs SASRec" in table and "±" in table
    assert (out / "results.png").stat().st_size > 1000 and (out / "results.csv").is_file()
    assert (out / "results_curves.png").stat().st_size > 1000  # the runs record their learning curves
    groups = (out / "results_by_group.md").read_text()
    assert "by sequence length" in groups and "by target popularity" in groups and "| SRACL | 2 |" in groups
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert "0 run(s) to do" in again.stdout  # finished runs are skipped
    assert len(json.loads((out / "harness.json").read_text())["invocations"]) == 2
    from recbole_sracl.benchmark.compare import summarise

    versus = summarise(out, "tiny", reference="SASRec")
    assert "vs SASRec |" in versus and "| SRACL | 2 |" in versus and "Best baseline" not in versus
    assert (out / "results_vs_SASRec.md").read_text() == versus
    with pytest.raises(SystemExit, match="--reference=DuoRec: no finished runs"):
        summarise(out, "tiny", reference="DuoRec")


def test_group_summary_averages_seeds_per_group(tmp_path):
    from recbole_sracl.benchmark.compare import _finished_run_files, group_summary

    (tmp_path / "runs").mkdir()
    for seed, (short, long) in {1: (0.1, 0.3), 2: (0.2, 0.5)}.items():
        groups = {"sequence_length": {">6": {"users": 6, "hit@20": long, "ndcg@20": long / 2},
                                      "<7": {"users": 4, "hit@20": short, "ndcg@20": short / 2}}}
        (tmp_path / "runs" / f"SRACL__seed{seed}.json").write_text(json.dumps(
            {"seed": seed, "test_result": {"hit@20": 0.0}, "test_result_by_group": groups}))
    (tmp_path / "runs" / "SASRec__seed1.json").write_text(json.dumps({"seed": 1, "test_result": {"hit@20": 0.0}}))
    table = group_summary(_finished_run_files(tmp_path), ["SASRec", "SRACL"], "tiny")
    assert "| variant | seeds | <7 (4 users) HR@20 | <7 (4 users) NDCG@20 | >6 (6 users) HR@20 |" in table
    assert "| SRACL | 2 | 0.1500 | 0.0750 | 0.4000 | 0.2000 |" in table
    assert "SASRec" not in table  # made before groups were recorded
    (tmp_path / "older" / "runs").mkdir(parents=True)
    (tmp_path / "older" / "runs" / "SASRec__seed1.json").write_text(json.dumps({"seed": 1, "test_result": {}}))
    assert group_summary(_finished_run_files(tmp_path / "older"), ["SASRec"], "tiny") == ""  # no table without group metrics


def test_reproduction_check_pairs_runs_by_variant_and_seed(tmp_path):
    from recbole_sracl.benchmark.compare import main, reproduction_check

    def write(folder, name, ndcg, epoch, files=None, cpu="CPU A", recorded=True, commit="a" * 40, modified=False):
        data = {"seed": int(name[-4:]), "test_result": {"hit@10": 0.1, "hit@20": 0.2, "ndcg@10": 0.05, "ndcg@20": ndcg},
                "best_epoch": epoch, "best_valid_score": ndcg + 0.01, "epochs_run": epoch + 11,
                "median_epoch_seconds": 1.0, "machine": {"cpu_model": cpu} if recorded else {}}
        if recorded:
            data["semantic_files"] = None if files is None else {"files": {"x.uemb": files}}
            data["source"] = {"commit": commit, "modified": modified}
        (folder / "runs").mkdir(parents=True, exist_ok=True)
        (folder / "runs" / f"{name}.json").write_text(json.dumps(data))

    committed, rerun = tmp_path / "committed", tmp_path / "rerun"
    write(committed, "SASRec__seed2024", 0.0600, 15, recorded=False)
    write(committed, "SRACL__seed2024", 0.0500, 40, files="aaa")
    write(committed, "SRACL__seed2025", 0.0400, 30, files="aaa")  # not rerun: left out
    write(committed, "SRACL__seed2026", 0.0400, 30, files="aaa")
    write(rerun, "SASRec__seed2024", 0.0600, 15)
    write(rerun, "SRACL__seed2024", 0.0520, 46, files="bbb", cpu="CPU B", commit="b" * 40, modified=True)
    write(rerun, "SRACL__seed2026", 0.0400, 30, files="aaa")
    write(rerun, "SRACL__seed2027", 0.0400, 30, files="aaa")  # no committed seed 2027: left out
    table = reproduction_check(rerun, committed)
    assert "| SASRec__seed2024 | 0.2000 | 0.2000 | 0.0600 | 0.0600 | +0.0% | 15 -> 15 | 0.0700 -> 0.0700 | yes " \
           "| not recorded | not recorded | not recorded |" in table
    assert "| SRACL__seed2024 | 0.2000 | 0.2000 | 0.0500 | 0.0520 | +4.0% | 40 -> 46 | 0.0600 -> 0.0620 | no " \
           "| different | aaaaaaa -> bbbbbbb +changes | CPU A -> CPU B |" in table
    assert "| SRACL__seed2026 | 0.2000 | 0.2000 | 0.0400 | 0.0400 | +0.0% | 30 -> 30 | 0.0500 -> 0.0500 | yes " \
           "| same | same | same |" in table
    assert "seed2025" not in table and "seed2027" not in table
    assert "3 run(s) compared, 2 with an identical test result; change of NDCG@20: mean +1.3%, largest in size " \
           "+4.0%." in table
    assert (rerun / "reproduction.md").read_text() == table
    assert main(["--dataset=tiny", f"--out={rerun}", "--summarise_only", f"--check_against={committed}"]) == 0
    with pytest.raises(SystemExit, match="none of the finished runs"):
        reproduction_check(rerun, tmp_path / "empty")


def test_pool_with_summarises_several_result_folders_and_tests_every_metric(tmp_path):
    from recbole_sracl.benchmark.compare import main, paired_p_value, pooled_run_files, summarise

    def write(folder, variant, seed, ndcg20, hit20=0.2):
        data = {"seed": seed, "test_result": {"hit@10": 0.1, "hit@20": hit20, "ndcg@10": 0.05, "ndcg@20": ndcg20},
                "best_epoch": 3, "epochs_run": 4, "median_epoch_seconds": 1.0, "machine": {}}
        # per-group metrics: NDCG@20 <7 as overall, >10 * 0.6 for SRACL; none for DuoRec in `later`
        if not (variant == "DuoRec" and folder.name == "later"):
            group_hit20 = hit20 + (seed / 500 if variant == "SRACL" else 0)
            data["test_result_by_group"] = {"sequence_length": {
                label: {"hit@20": group_hit20, "ndcg@20": ndcg20 * scale, "users": 5} for label, scale in
                (("<7", 1.0), (">10", 0.6 if variant == "SRACL" else 1.0))}}
        (folder / "runs").mkdir(parents=True, exist_ok=True)
        (folder / "runs" / f"{variant}__seed{seed}.json").write_text(json.dumps(data))

    first, later = tmp_path / "first", tmp_path / "later"
    for seed, (ours, theirs) in {1: (0.070, 0.068), 2: (0.072, 0.069)}.items():
        write(first, "SRACL", seed, ours, hit20=0.21)
        write(first, "DuoRec", seed, theirs)
    write(later, "SRACL", 3, 0.066, hit20=0.19)
    write(later, "DuoRec", 3, 0.067)
    write(later, "DuoRec", 2, 0.069)  # the same run in both folders (a rerun): kept once, the copy with groups
    write(later, "SRACL", 4, 0.071)  # no DuoRec partner: in the means, not in the paired tests
    pooled, counts = pooled_run_files([later, first])
    assert counts == {later: 4, first: 4}
    assert [(variant, data["seed"]) for variant, data in pooled] == [
        ("DuoRec", 1), ("DuoRec", 2), ("DuoRec", 3), ("SRACL", 1), ("SRACL", 2), ("SRACL", 3), ("SRACL", 4)]
    assert main(["--dataset=tiny", f"--out={later}", "--summarise_only", f"--pool_with={first}",
                 "--reference=DuoRec"]) == 0
    table = (later / "results_pooled_vs_DuoRec.md").read_text()
    ndcg_p = paired_p_value([0.070, 0.072, 0.066], [0.068, 0.069, 0.067])
    hit_p = paired_p_value([0.21, 0.21, 0.19], [0.2, 0.2, 0.2])
    assert f"| SRACL | 4 | 0.1000 ± 0.0000 | 0.2025 ± 0.0096 | 0.0500 ± 0.0000 | 0.0698 ± 0.0026 | +2.6% vs DuoRec " \
           f"| {ndcg_p:.3f} |" in table  # means over all seeds; the t-test over the three shared ones
    assert f"| SRACL | 3 | +0.0%, p n/a, 0/3 | +1.7%, p {hit_p:.3f}, 2/3 | +0.0%, p n/a, 0/3 " \
           f"| +2.0%, p {ndcg_p:.3f}, 2/3 |" in table
    assert f"Pooled from the finished runs of: {later} (4); {first} (4)." in table
    # by group: seeds 1 and 2 (`first`'s copy of DuoRec seed 2, which has them; DuoRec seed 3 has none)
    short_p, long_p = (paired_p_value(ours, [0.068, 0.069]) for ours in ([0.070, 0.072], [0.042, 0.0432]))
    hit_group_p = paired_p_value([0.212, 0.214], [0.2, 0.2])
    assert "| variant | shared seeds | <7 HR@20 | <7 NDCG@20 | >10 HR@20 | >10 NDCG@20 |" in table
    assert f"| SRACL | 2 | +6.5%, p {hit_group_p:.3f}, 2/2 | +3.6%, p {short_p:.3f}, 2/2 " \
           f"| +6.5%, p {hit_group_p:.3f}, 2/2 | -37.8%, p {long_p:.3f}, 0/2 |" in table
    assert "SRACL | 2 |" in (later / "results_vs_DuoRec.md").read_text()  # the folder's own summary stays its own
    assert summarise(later, "tiny", pool_with=[first]).startswith("### tiny")
    assert (later / "results_pooled.md").is_file() and (later / "results_pooled.png").stat().st_size > 1000
    assert paired_p_value([0.1], [0.2]) is None and paired_p_value([0.1, 0.2], [0.1, 0.2]) is None
    assert paired_p_value([0.21, 0.21], [0.2, 0.2]) is None  # one difference on every seed: no spread to test against
    # a reference with runs only in the pooled folder: the folder's own table is against its best baseline
    only = tmp_path / "only"
    write(only, "SRACL", 1, 0.070, hit20=0.21)  # the same run as first's (pooled once)
    assert main(["--dataset=tiny", f"--out={only}", "--summarise_only", f"--pool_with={first}",
                 "--reference=DuoRec"]) == 0
    assert (only / "results.md").is_file() and not (only / "results_vs_DuoRec.md").exists()
    assert "| SRACL | 2 | 0.1000 ± 0.0000 | 0.2100 ± 0.0000 | 0.0500 ± 0.0000 | 0.0710 ± 0.0014 | +3.6% vs DuoRec" \
        in (only / "results_pooled_vs_DuoRec.md").read_text()
    write(later, "DuoRec", 1, 0.0685)  # a different result for a run the other folder also holds
    with pytest.raises(SystemExit, match="DuoRec__seed1 finished in both .* with different test results"):
        pooled_run_files([first, later])
    with pytest.raises(SystemExit, match="missing/runs does not exist"):
        pooled_run_files([first, tmp_path / "missing"])


def test_source_revision_names_the_commit_and_local_changes(tmp_path):
    import subprocess

    from recbole_sracl.benchmark.compare import _code_match
    from recbole_sracl.quick_start import source_revision

    assert source_revision(str(tmp_path)) == {"commit": None, "modified": None}  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "code.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert source_revision(str(tmp_path)) == {"commit": commit, "modified": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert source_revision(str(tmp_path)) == {"commit": commit, "modified": True}
    (tmp_path / "venv" / "package").mkdir(parents=True)  # e.g. a wheel installed into a venv inside the checkout
    (tmp_path / "venv" / "package" / "module.py").write_text("x = 3\n")
    assert source_revision(str(tmp_path / "venv" / "package")) == {"commit": None, "modified": None}

    def run(commit, modified=False):
        return {"source": {"commit": commit, "modified": modified}}

    assert _code_match(run(commit), run(commit)) == "same"
    assert _code_match(run(commit, True), run(commit, True)) == f"{commit[:7]} +changes -> {commit[:7]} +changes"
    assert _code_match(run("b" * 40), run(commit)) == f"{commit[:7]} -> bbbbbbb"
    assert _code_match(run(None), run(commit)) == "not recorded" and _code_match({}, run(commit)) == "not recorded"


def test_cpu_info_and_match_tell_generations_with_one_marketing_name_apart(tmp_path):
    from recbole_sracl.benchmark.compare import _cpu_match
    from recbole_sracl.quick_start import cpu_info

    block = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n" \
            "stepping\t: 1\n\n"
    (tmp_path / "cpuinfo").write_text(block.format(n=0) + block.format(n=1).replace("26", "25"))
    # both from the first processor's block
    assert cpu_info(str(tmp_path / "cpuinfo")) == {"cpu_model": "AMD EPYC",
                                                   "cpu_id": "AuthenticAMD family 26 model 2 stepping 1"}
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\n")
    assert cpu_info(str(tmp_path / "arm"))["cpu_id"] is None and cpu_info(str(tmp_path / "missing"))["cpu_id"] is None

    def run(model="AMD EPYC", ident=None):
        return {"machine": {key: value for key, value in (("cpu_model", model), ("cpu_id", ident)) if value}}

    zen4, zen5 = "AuthenticAMD family 25 model 17 stepping 1", "AuthenticAMD family 26 model 2 stepping 1"
    assert _cpu_match(run(ident=zen5), run(ident=zen4)) == f"AMD EPYC ({zen4}) -> AMD EPYC ({zen5})"
    assert _cpu_match(run(ident=zen5), run(ident=zen5)) == "same"
    assert _cpu_match(run(), run()) == "same"  # older run files: names only
    assert _cpu_match(run(ident=zen5), run()) == "same name (family/model recorded for one run only)"
    assert _cpu_match(run("Intel Xeon", zen5), run()) == "AMD EPYC -> Intel Xeon"
    assert _cpu_match(run(model=None), run()) == "not recorded"


def test_semantic_builds_note_names_builds_and_variants_that_mix_them(tmp_path):
    from recbole_sracl.benchmark.compare import _finished_run_files, semantic_builds_note, summarise

    def write(name, files="absent"):
        data = {"seed": int(name[-1]), "test_result": {"hit@10": 0.1, "hit@20": 0.2, "ndcg@10": 0.05, "ndcg@20": 0.06},
                "best_epoch": 3, "epochs_run": 4, "median_epoch_seconds": 1.0, "machine": {}}
        if files != "absent":
            data["semantic_files"] = None if files is None else {"files": files}
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{name}.json").write_text(json.dumps(data))

    write("SASRec__seed1", None)  # reads no semantic files
    write("SRACL__seed1", {"d.uemb": "a" * 64, "d.inbr": "c" * 64})
    write("SRACL__seed2", {"d.uemb": "a" * 64, "d.inbr": "c" * 64})
    assert semantic_builds_note(_finished_run_files(tmp_path)) == (
        "Semantic files read (sha256, first 8 hex digits): d.inbr cccccccc (2 runs: SRACL seed 1, SRACL seed 2); "
        "d.uemb aaaaaaaa (2 runs: SRACL seed 1, SRACL seed 2).")
    write("SRACL_wo_LIS__seed1", {"d.uemb": "a" * 64})
    write("SRACL_wo_LIS__seed2", {"d.uemb": "b" * 64})
    write("CL4SRec__seed1")  # written before the record
    note = semantic_builds_note(_finished_run_files(tmp_path), listed=1)
    assert note == ("Semantic files read (sha256, first 8 hex digits): d.inbr cccccccc (2 runs); d.uemb aaaaaaaa "
                    "(3 runs), bbbbbbbb (1 run: SRACL_wo_LIS seed 2); 1 run file(s) predate this record. **More than "
                    "one build of the semantic files is in this table**; these variants mix builds across their "
                    "seeds: SRACL_wo_LIS. A rebuild on another machine can move an SRA-CL cell by a few percent; "
                    "compare rows that read different builds with care.")
    assert "these variants mix builds across their seeds: SRACL_wo_LIS." in summarise(tmp_path, "tiny")
    for path in (tmp_path / "runs").glob("*.json"):
        if "CL4SRec" not in path.name:
            path.unlink()
    assert semantic_builds_note(_finished_run_files(tmp_path)) == ""  # nothing recorded: no note


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


def test_compare_resumes_a_run_cut_off_mid_training(tmp_path, monkeypatch):
    from recbole_sracl.benchmark import compare

    out = tmp_path / "results"
    cut_off = out / "work" / "checkpoints" / "SASRec__seed1"
    cut_off.mkdir(parents=True)
    (cut_off / "SASRec-tiny-old-last.pth").write_bytes(b"old")
    last = cut_off / "SASRec-tiny-new-last.pth"
    last.write_bytes(b"new")
    (cut_off / "SASRec-tiny-new.pth").write_bytes(b"best")  # a best-model file is never resumed from
    os.utime(cut_off / "SASRec-tiny-old-last.pth", (0, 0))
    commands = {}

    def record(command, log_file, threads, cwd, children=None):
        commands[log_file.stem] = command
        return 0, 0.0

    monkeypatch.setattr(compare, "_run_one", record)
    args, shared = compare.parse_args(["--dataset=tiny", "--variants=SASRec", "--seeds=1,2", f"--out={out}"])
    compare.run_all(args, shared)
    assert commands["SASRec__seed1"][-1] == f"--resume={last.resolve()}"
    assert not any(arg.startswith("--resume") for arg in commands["SASRec__seed2"])


def test_a_resumed_run_appends_to_its_log(tmp_path):
    from recbole_sracl.benchmark.compare import _run_one

    log = tmp_path / "run.log"
    log.write_text("first attempt\n")
    code, _ = _run_one([sys.executable, "-c", "print('second attempt')", "--resume=x-last.pth"], log, 1, tmp_path)
    assert code == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "first attempt" and lines[-1] == "second attempt"
    _run_one([sys.executable, "-c", "print('fresh')"], log, 1, tmp_path)
    assert log.read_text().splitlines()[1:] == ["fresh"]


# a harness whose runs are a child that writes its pid and sleeps, so the test can stop the harness mid-run
_SLEEPING_HARNESS = """
import sys
from recbole_sracl.benchmark import compare

def sleeping_run(variant, seed, dataset, shared, result_file, checkpoint_dir):
    return [sys.executable, "-c", "import os, time; open('child.pid', 'w').write(str(os.getpid())); time.sleep(300)"]

compare.run_command = sleeping_run
sys.exit(compare.main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_stopping_the_harness_stops_its_runs(tmp_path):
    import signal
    import time

    out = tmp_path / "results"
    harness = subprocess.Popen(
        [sys.executable, "-c", _SLEEPING_HARNESS, "--dataset=tiny", "--variants=SASRec", "--seeds=1,2", "--workers=1",
         f"--out={out}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = out / "work" / "child.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    harness.send_signal(signal.SIGTERM)
    _, stderr = harness.communicate(timeout=60)
    assert harness.returncode == 130
    assert "stopped: 1 running run(s) terminated" in stderr and "rerun the same command" in stderr
    with pytest.raises(ProcessLookupError):  # the run is gone, not left training on its own
        os.kill(child, 0)
    assert not (out / "work" / "logs" / "SASRec__seed2.log").exists()  # the queued run was not started


def test_child_processes_start_nothing_once_stopping(tmp_path):
    from recbole_sracl.benchmark.compare import ChildProcesses, _run_one

    children = ChildProcesses()
    assert children.stop_all() == 0
    code, _ = _run_one([sys.executable, "-c", "open('ran', 'w')"], tmp_path / "run.log", 1, tmp_path, children)
    assert code is None and not (tmp_path / "ran").exists()


def _append_invocations(out, writer, count):
    from recbole_sracl.benchmark.compare import record_invocation

    for index in range(count):
        record_invocation(out, {"writer": writer, "index": index})


@pytest.mark.skipif(sys.platform == "win32", reason="the lock is POSIX-only (fcntl)")
def test_harness_commands_sharing_one_folder_lose_no_invocation(tmp_path):
    import multiprocessing

    out = tmp_path / "results"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_invocations, args=(out, writer, 40)) for writer in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    invocations = json.loads((out / "harness.json").read_text())["invocations"]
    assert sorted((entry["writer"], entry["index"]) for entry in invocations) == [
        (writer, index) for writer in range(4) for index in range(40)]
    for writer in range(4):  # each command's entries keep their order
        assert [e["index"] for e in invocations if e["writer"] == writer] == list(range(40))


def test_neighbour_agreement_exact_values():
    from recbole_sracl.benchmark.neighbours import item_agreement, prefix_agreement, user_agreement

    histories = {"u1": ["a", "b", "a"], "u2": ["b", "c"], "u3": ["d"]}
    items = item_agreement(histories, {"a": ["b", "c"], "d": ["a", "e"]}, k=2)
    # pairs a-b (together in u1), a-c (never), d-a (never), d-e (e unseen)
    assert items["pairs"] == 4 and items["cooccur_rate"] == 0.25 and items["unseen_in_training_rate"] == 0.25
    # weighted by training count: a (2x) gets substitutes of mean popularity (2+1)/2 over 2, d (1x): (2+0)/2 over 1
    assert items["substitute_popularity_ratio"] == (2 * 0.75 + 1 * 1.0) / 3
    users = user_agreement(histories, {"u1": "c", "u2": "a", "u3": "b"}, {"u1": ["u2", "u3"], "u3": ["u1"]}, k=1)
    # u1-u2 share b and u2 holds u1's next item c; u3-u1 share nothing but u1 holds u3's next item b
    assert users == {"pairs": 2, "shared_item_rate": 0.5, "next_item_in_a_neighbour_history": 1.0}
    prefixes = prefix_agreement(histories, {"u1:1": ["u1:2", "u2:1"], "u2:1": ["u1:1"], "u3:1": ["u1:1"]}, k=2)
    # u1:1 = [a] predicts b: u1:2 = [a b] is its own user and holds b, u2:1 = [b] holds b; u2:1 = [b] predicts c:
    # u1:1 = [a] shares nothing; u3 has no training row (one item), so u3:1 is skipped
    assert prefixes == {"pairs": 3, "same_user_rate": 1 / 3, "target_in_neighbour_rate": 2 / 3,
                        "shared_item_rate": 1 / 3}


def test_neighbour_report_on_built_files(semantic_copy):
    from recbole_sracl.benchmark.neighbours import neighbour_quality, render

    report = neighbour_quality(semantic_copy, "tiny", k=3)
    for kind in ("items", "users", "prefixes"):
        pools = {"semantic", "random"} | ({"cooccurrence"} if kind != "prefixes" else set())
        assert set(report[kind]) == pools and report[kind]["semantic"]["pairs"] > 0
    assert report["items"]["cooccurrence"]["cooccur_rate"] == 1.0  # by construction
    assert report["users"]["cooccurrence"]["shared_item_rate"] == 1.0
    table = render(report)
    assert "| measure | semantic | random | cooccurrence |" in table and "| items: cooccur rate |" in table
    users_row = next(line for line in table.splitlines() if line.startswith("| users: shared item rate"))
    assert users_row.endswith(" | 1.0000 |")
    prefix_row = next(line for line in table.splitlines() if line.startswith("| prefixes: same user rate"))
    assert prefix_row.endswith(" |  |")  # no co-occurrence pool for prefixes


def test_cooccurrence_lists_by_token():
    from recbole_sracl.benchmark.neighbours import cooccurrence_lists
    from recbole_sracl.data.sequences import buyers_by_item

    # tokens sort to rows a=1, b=2, c=3; a-b share u1 and u2, a-c share u1 only (b has 2 buyers, c has 1)
    lists = cooccurrence_lists({"u1": ["c", "a", "b"], "u2": ["b", "a"], "u3": ["d"]}, k=2)
    assert lists == {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"], "d": []}
    # the same code over users: u1 and u2 share a and b, u3 shares nothing
    by_item = buyers_by_item({"u1": ["c", "a", "b", "a"], "u2": ["b", "a"], "u3": ["d"]})
    assert by_item == {"c": ["u1"], "a": ["u1", "u2"], "b": ["u1", "u2"], "d": ["u3"]}
    assert cooccurrence_lists(by_item, k=2) == {"u1": ["u2"], "u2": ["u1"], "u3": []}


def test_semantic_throughput_benchmark(semantic_copy, tiny_yaml, tmp_path):
    out = tmp_path / "speed"
    process = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--semantic", "--dataset=tiny", "--sample=5",
         "--users=300,600", "--exact_limit=400", "--queries=50", f"--out={out}", f"--config_files={tiny_yaml}",
         f"--data_path={semantic_copy}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    (report_file,) = out.glob("semantic-tiny-*.json")
    report = json.loads(report_file.read_text())
    assert report["prompts_per_second"] > 0 and report["user_texts_per_second"] > 0
    small, big, users, items = report["retrieval"]
    assert small["vectors"] == big["vectors"] == "synthetic Gaussian"
    assert small["rows"] == 300 and small["recall_measured_on_queries"] == 300 and small["k"] == 100
    assert big["rows"] == 600 and big["recall_measured_on_queries"] == 50 and "scaled to 600" in big["flat_seconds_note"]
    for row, suffix in ((users, "uemb"), (items, "iemb")):  # the dataset's own vectors
        tokens = read_embedding_file(semantic_copy / "tiny" / f"tiny.{suffix}", suffix)[0]
        assert row["vectors"] == f"tiny.{suffix}" and row["rows"] == len(tokens) and row["k"] == min(100, len(tokens) - 1)
    for row in (small, big, users, items):
        assert 0.0 <= row["hnsw_recall"] <= 1.0 and 0.0 <= row["ivf_recall"] <= 1.0
        assert row["flat_seconds"] > 0 and row["hnsw_build_seconds"] > 0
    assert "--semantic" in report["command"]


def test_variant_groups_expand_in_order_without_repeats():
    from recbole_sracl.benchmark.variants import expand

    chosen = expand(["SRACL_beta0.05", "betasweep", "subsweep", "alphasweep"])
    assert [variant.name for variant in chosen] == [
        "SRACL_beta0.05", "SRACL_beta0.02", "SRACL_beta0.2", "SRACL_sub0.1", "SRACL_sub0.4",
        "SRACL_wo_LIS_alpha0.05", "SRACL_wo_LIS_alpha0.2", "SRACL_wo_LIS_alpha0.4"]
    assert [variant.overrides for variant in chosen] == [
        ("--beta=0.05",), ("--beta=0.02",), ("--beta=0.2",), ("--substitution_rate=0.1",), ("--substitution_rate=0.4",),
        ("--beta=0", "--alpha=0.05"), ("--beta=0", "--alpha=0.2"), ("--beta=0", "--alpha=0.4")]
    assert all(variant.uses_semantic_files for variant in chosen)
    assert [(v.name, v.overrides) for v in expand(["granularity"])] == [
        ("SRACL_prefix", ("--user_granularity=prefix",)),
        ("SRACL_prefix_wo_LIS", ("--user_granularity=prefix", "--beta=0")),
        ("SRACL_prefix_other_users_wo_LIS", ("--user_granularity=prefix", "--prefix_same_user=False", "--beta=0")),
        ("SRACL_prefix_other_users_alpha0.2_is_cos0.2", ("--user_granularity=prefix", "--prefix_same_user=False",
                                                         "--alpha=0.2", "--is_sim=cos", "--is_tau=0.2"))]
    assert [(v.name, v.overrides) for v in expand(["backbones"])] == [
        ("GRU4Rec+SRACL", ("--backbone=GRU4Rec",)),
        ("GRU4Rec+SRACL_wo_LIS", ("--backbone=GRU4Rec", "--beta=0")),
        ("GRU4Rec+SRACL_wo_LCS", ("--backbone=GRU4Rec", "--alpha=0")),
        ("GRU4Rec+SRACL_wo_LIS_alpha0.2", ("--backbone=GRU4Rec", "--beta=0", "--alpha=0.2")),
        ("DuoRec+SRACL", ("--backbone=DuoRec",)),
        ("DuoRec+SRACL_wo_LIS", ("--backbone=DuoRec", "--beta=0"))]
    assert [(v.name, v.overrides) for v in expand(["gru4rec_alphasweep"])] == [
        ("GRU4Rec+SRACL_wo_LIS_alpha0.05", ("--backbone=GRU4Rec", "--beta=0", "--alpha=0.05")),
        ("GRU4Rec+SRACL_wo_LIS_alpha0.2", ("--backbone=GRU4Rec", "--beta=0", "--alpha=0.2")),
        ("GRU4Rec+SRACL_wo_LIS_alpha0.4", ("--backbone=GRU4Rec", "--beta=0", "--alpha=0.4"))]
    assert [(v.name, v.overrides) for v in expand(["duorec_alphasweep"])] == [
        ("DuoRec+SRACL_wo_LIS_alpha0.05", ("--backbone=DuoRec", "--beta=0", "--alpha=0.05")),
        ("DuoRec+SRACL_wo_LIS_alpha0.2", ("--backbone=DuoRec", "--beta=0", "--alpha=0.2")),
        ("DuoRec+SRACL_wo_LIS_alpha0.4", ("--backbone=DuoRec", "--beta=0", "--alpha=0.4"))]
    assert [(v.name, v.overrides) for v in expand(["pool"])] == [
        ("SRACL_wo_LCS_random_pool", ("--alpha=0", "--substitution_pool=random")),
        ("SRACL_random_pool", ("--substitution_pool=random",)),
        ("SRACL_wo_LCS_cooc_pool", ("--alpha=0", "--substitution_pool=cooccurrence")),
        ("SRACL_cooc_pool", ("--substitution_pool=cooccurrence",))]
    assert [(v.name, v.overrides, v.uses_semantic_files) for v in expand(["userpool"])] == [
        ("SRACL_wo_LIS_random_users", ("--beta=0", "--user_pool=random"), True),
        ("SRACL_wo_LIS_cooc_users", ("--beta=0", "--user_pool=cooccurrence"), True),
        ("SRACL_random_users", ("--user_pool=random",), True),
        ("SRACL_cooc_users", ("--user_pool=cooccurrence",), True)]
    assert [(v.name, v.overrides) for v in expand(["negatives"])] == [
        ("SRACL_cs_symmetric", ("--cs_negatives=symmetric",)),
        ("SRACL_wo_LIS_cs_symmetric", ("--cs_negatives=symmetric", "--beta=0")),
        ("SRACL_cs_symmetric_online", ("--cs_negatives=symmetric", "--neighbour_encoding=online_unique")),
        ("SRACL_wo_LIS_cs_symmetric_online",
         ("--cs_negatives=symmetric", "--neighbour_encoding=online_unique", "--beta=0"))]
    assert [(v.name, v.overrides) for v in expand(["anchor"])] == [
        ("SRACL_cs_anchor_separate", ("--cs_anchor=separate",)),
        ("SRACL_wo_LIS_cs_anchor_separate", ("--cs_anchor=separate", "--beta=0"))]
    assert [(v.name, v.overrides) for v in expand(["iscos"])] == [
        ("SRACL_is_cos0.2", ("--is_sim=cos", "--is_tau=0.2")),
        ("SRACL_wo_LCS_is_cos0.2", ("--alpha=0", "--is_sim=cos", "--is_tau=0.2")),
        ("SRACL_alpha0.2_is_cos0.2", ("--alpha=0.2", "--is_sim=cos", "--is_tau=0.2")),
        ("GRU4Rec+SRACL_is_cos0.2", ("--backbone=GRU4Rec", "--is_sim=cos", "--is_tau=0.2")),
        ("GRU4Rec+SRACL_wo_LCS_is_cos0.2", ("--backbone=GRU4Rec", "--alpha=0", "--is_sim=cos", "--is_tau=0.2")),
        ("GRU4Rec+SRACL_alpha0.2_is_cos0.2", ("--backbone=GRU4Rec", "--alpha=0.2", "--is_sim=cos", "--is_tau=0.2"))]
    with pytest.raises(KeyError, match="unknown variant or group 'SRACL_beta9'.*betasweep"):
        expand(["SRACL_beta9"])


def test_item_embedding_measures_exact_values():
    import numpy as np

    from recbole_sracl.benchmark.embeddings import embedding_report

    table = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, -1.0]])
    groups = np.array(["rare", "rare", "popular", "popular"], dtype=object)
    neighbours = np.array([[1, -1], [0, -1], [3, 0], [-1, -1]])  # item 3 has none: left out of its group
    random = np.array([[2, 3], [2, -1], [0, 1], [0, -1]])
    report = embedding_report(table, groups, neighbours, random)
    # rare: items 0 and 1 point the same way (cosine 1), random partners are orthogonal; norm ratios 2/1 and 1/2
    assert report["rare"] == {"items": 2, "norm": 1.5, "neighbour_cosine": 1.0, "random_cosine": 0.0,
                              "neighbour_norm_ratio": 1.25}
    # popular: item 2 against items 3 (cosine -1) and 0 (cosine 0), both of norm 1 against its 3
    assert report["popular"] == {"items": 1, "norm": 3.0, "neighbour_cosine": -0.5, "random_cosine": 0.0,
                                 "neighbour_norm_ratio": 1 / 3}


def test_item_embedding_report_on_trained_checkpoints(semantic_copy, tiny_yaml, tmp_path, capsys):
    import torch
    from conftest import tiny_overrides

    from recbole_sracl.benchmark.embeddings import item_embedding_table, main
    from recbole_sracl.evaluation import group_order
    from recbole_sracl.quick_start import run

    files = {model: run(model, "tiny", [str(tiny_yaml)], argv=tiny_overrides(semantic_copy))["best_model_file"]
             for model in ("SASRec", "SRACL")}
    out = tmp_path / "report" / "embeddings.json"
    assert main(["--dataset=tiny", f"--data_path={semantic_copy}", f"--config_files={tiny_yaml}", "--k=3",
                 "--bounds", "20", "30", f"--out={out}", *[f"--checkpoint={name}={path}" for name, path in files.items()]]) == 0
    report = json.loads(out.read_text())
    assert list(report["checkpoints"]) == ["SASRec", "SRACL"] and report["items"] == 40 and report["machine"]
    for entry in report["checkpoints"].values():
        assert sum(group["items"] for group in entry["groups"].values()) == 40
        assert list(entry["groups"]) == sorted(entry["groups"], key=group_order)
        assert all(-1 <= group["neighbour_cosine"] <= 1 and group["norm"] > 0 for group in entry["groups"].values())
        targets = entry["test_targets"]
        assert 0 < sum(group["test_users"] for group in targets.values()) <= 60  # one test item per user
        for group in targets.values():
            assert 0 <= group["neighbours_above_target"] <= group["any_neighbour_above"] <= 1
            assert list(group["items_above_target_by_group"]) == report["item_groups"]
    assert "| SRACL |" in capsys.readouterr().out and "| SRACL |" in out.with_suffix(".md").read_text()
    sasrec = item_embedding_table(torch.load(files["SASRec"], weights_only=True)["state_dict"])
    assert sasrec.shape == (41, 64)  # padding row + 40 items
    with pytest.raises(SystemExit, match="item_embedding.weight"):
        item_embedding_table({"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["--dataset=tiny", "--checkpoint=missing.pth"])
    renamed = torch.load(files["SRACL"], weights_only=True)
    renamed["config"]["ITEM_ID_FIELD"] = "product_id"
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(SystemExit, match="ITEM_ID_FIELD differ"):
        main(["--dataset=tiny", f"--data_path={semantic_copy}", f"--checkpoint=SASRec={files['SASRec']}",
              f"--checkpoint=renamed={tmp_path / 'renamed.pth'}"])


def test_scored_above_exact_values():
    import torch

    from recbole_sracl.benchmark.embeddings import scored_above

    scores = torch.tensor([[-float("inf"), 0.9, 0.5, 0.7, 0.1],   # test item 2: items 1 and 3 above it
                           [-float("inf"), 0.2, 0.3, 0.4, 0.8],   # test item 4: nothing above it
                           [-float("inf"), 0.5, 0.1, 0.2, 0.3]])  # test item 3 has no neighbours: dropped
    neighbours = torch.tensor([[-1, -1], [2, -1], [1, 4], [-1, -1], [2, 3]])
    groups = torch.tensor([-1, 0, 0, 1, 1])  # padding in no group
    items, shares, by_group = scored_above(scores, torch.tensor([2, 4, 3]), neighbours, groups)
    assert items.tolist() == [2, 4]
    assert shares.tolist() == [0.5, 0.0]  # item 2: neighbour 1 above, 4 below; item 4: neither 2 nor 3 above
    assert by_group.tolist() == [[0.5, 0.5], [0.0, 0.0]]  # item 2: item 1 of group 0, item 3 of group 1


def test_status_reports_finished_cut_off_and_planned_runs(tmp_path, capsys):
    from recbole_sracl.benchmark.compare import main, status_report
    from recbole_sracl.trainer import save_atomically

    out = tmp_path / "results"
    (out / "runs").mkdir(parents=True)
    finished = out / "runs" / "SASRec__seed1.json"
    finished.write_text(json.dumps({"seed": 1, "epochs_run": 27, "best_epoch": 15, "best_valid_score": 0.0772,
                                    "median_epoch_seconds": 22.41, "test_result": {"ndcg@20": 0.0629}}))
    os.utime(finished, (1000.0, 1000.0))
    cut_off = out / "work" / "checkpoints" / "SRACL__seed1"
    cut_off.mkdir(parents=True)
    save_atomically({"config": {"stopping_step": 10, "eval_step": 1, "epochs": 300}, "epoch": 7, "cur_step": 3,
                     "best_epoch": 4, "best_valid_score": 0.05, "finished": False, "epoch_seconds": [100.0, 120.0, 110.0],
                     "epoch_valid_score": [0.01, 0.02, 0.03, 0.04, 0.05, 0.049, 0.048, None]},
                    cut_off / "SRACL-tiny-x-last.pth")
    os.utime(cut_off / "SRACL-tiny-x-last.pth", (1000.0 + 3 * 3600 + 5 * 60,) * 2)
    broken = out / "work" / "checkpoints" / "DuoRec__seed1"
    broken.mkdir()
    (broken / "DuoRec-tiny-y-last.pth").write_bytes(b"not a checkpoint")
    os.utime(broken / "DuoRec-tiny-y-last.pth", (1000.0, 1000.0))
    first_epoch = out / "work" / "logs" / "GRU4Rec__seed1.log"  # started, no checkpoint yet
    first_epoch.parent.mkdir(parents=True)
    first_epoch.write_text("training...\n")
    os.utime(first_epoch, (1000.0 + 3 * 3600 + 58 * 60,) * 2)
    now = 1000.0 + 4 * 3600
    table = status_report(out, ["SRACL__seed1", "CL4SRec__seed1", "GRU4Rec__seed1"], now=now).splitlines()
    assert table[4:7] == [
        "| SRACL__seed1 | training or cut off (rerun to resume) | 8 | 4 | 0.0500 | valid 0.0480 at epoch 6 | 110.0 "
        "| 8 (15 min) | 55 min ago |",
        "| CL4SRec__seed1 | not started |  |  |  |  |  |  |  |",
        "| GRU4Rec__seed1 | started, no epoch finished yet (or failed: see work/logs/GRU4Rec__seed1.log) | 0 |  |  "
        "|  |  |  | 2 min ago |",
    ]
    assert table[7].startswith("| DuoRec__seed1 | unreadable checkpoint |  |  |  | ")
    assert "is not a checkpoint written by recbole_sracl" in table[7] and table[7].endswith("| 4 h 00 min ago |")
    assert table[8] == "| SASRec__seed1 | finished | 27 | 15 | 0.0772 | test NDCG@20 0.0629 | 22.4 |  | 4 h 00 min ago |"
    assert len(table) == 9
    assert main(["--dataset=tiny", f"--out={out}", "--status", "--variants=SASRec", "--seeds=1,2"]) == 0
    printed = capsys.readouterr().out
    assert "| SASRec__seed2 | not started |" in printed and "| SRACL__seed1 | training or cut off" in printed
    assert "| GRU4Rec__seed1 | started, no epoch finished yet" in printed  # found by its log alone
    assert not (out / "harness.json").exists()  # --status starts nothing and records nothing
    assert main(["--dataset=tiny", f"--out={tmp_path / 'empty'}", "--status"]) == 0
    assert "no runs in" in capsys.readouterr().out
    assert main(["--dataset=tiny", f"--out={out}", "--status", "--seeds=2024,x"]) == 2
    assert capsys.readouterr().err == "error: --seeds=2024,x: give whole numbers, comma-separated (e.g. " \
                                      "--seeds=2024,2025,2026)\n"


def test_epoch_curves_score_every_saved_epoch_by_target_popularity(semantic_copy, tiny_yaml, tmp_path):
    import torch
    from conftest import tiny_overrides

    from recbole_sracl.benchmark.epochs import main, overall
    from recbole_sracl.quick_start import run

    checkpoints, run_file = tmp_path / "checkpoints", tmp_path / "run.json"
    result = run("SRACL", "tiny", [str(tiny_yaml)], result_file=str(run_file),
                 argv=tiny_overrides(semantic_copy, "--epochs=3", "--save_epoch_checkpoints=True",
                                     f"--checkpoint_dir={checkpoints}", "--group_by_target_popularity=[6]"))
    epoch_files = sorted(checkpoints.glob("*-epoch*.pth"))
    assert [path.name[-13:] for path in epoch_files] == ["-epoch000.pth", "-epoch001.pth", "-epoch002.pth"]
    assert torch.load(epoch_files[1], weights_only=True)["epoch"] == 1
    out = tmp_path / "report" / "epochs.json"
    assert main([f"--run={run_file}", f"--checkpoints={checkpoints}", f"--out={out}"]) == 0
    report = json.loads(out.read_text())
    assert list(report["epochs"]) == ["0", "1", "2"] and report["best_epoch"] == result["best_epoch"]
    for row in report["epochs"].values():
        for split in ("valid", "test"):
            assert set(row[split]) == {"all", "<6", ">5"} and row[split]["all"]["users"] == 60  # one target per user
    check = report["best_epoch_check"]  # the best epoch, re-scored, gives the run's own test result
    assert check["recomputed"] == pytest.approx(result["test_result"]["ndcg@20"], abs=5e-5)
    assert f"| {result['best_epoch']}* |" in out.with_suffix(".md").read_text()
    groups = {"a": {"users": 1, "ndcg@20": 1.0}, "b": {"users": 3, "ndcg@20": 0.2}}
    assert overall(groups) == pytest.approx({"users": 4, "ndcg@20": 0.4})
    with pytest.raises(SystemExit, match="no recbole_sracl checkpoint"):
        main([f"--run={run_file}", f"--checkpoints={tmp_path / 'report'}"])
    with pytest.raises(SystemExit, match="--metric=recall@5"):
        main([f"--run={run_file}", f"--checkpoints={checkpoints}", "--metric=recall@5"])
    epoch_files[0].unlink()
    epoch_files[2].rename(epoch_files[0])  # epoch 2's checkpoint under epoch 0's name
    with pytest.raises(SystemExit, match="-epoch000.pth holds epoch 2, not the epoch 0 its name says"):
        main([f"--run={run_file}", f"--checkpoints={checkpoints}", f"--out={out}"])


def test_popularity_balanced_validation_selects_on_the_unweighted_group_mean(tiny_root, tiny_yaml, tmp_path):
    from conftest import tiny_overrides

    from recbole_sracl.benchmark.epochs import main
    from recbole_sracl.evaluation import balanced_mean
    from recbole_sracl.quick_start import run

    checkpoints, run_file, out = tmp_path / "checkpoints", tmp_path / "run.json", tmp_path / "epochs.json"
    result = run("SASRec", "tiny", [str(tiny_yaml)], result_file=str(run_file),
                 argv=tiny_overrides(tiny_root, "--epochs=3", "--save_epoch_checkpoints=True",
                                     "--valid_metric_average=popularity_groups", f"--checkpoint_dir={checkpoints}",
                                     "--group_by_target_popularity=[6]"))
    assert main([f"--run={run_file}", f"--checkpoints={checkpoints}", f"--out={out}"]) == 0
    report = json.loads(out.read_text())
    # the trainer's validation score of each epoch is the mean of the two groups' NDCG@20, not the users' mean
    balanced = [balanced_mean({label: row for label, row in report["epochs"][str(epoch)]["valid"].items()
                               if label != "all"}, "ndcg@20") for epoch in range(3)]
    overall = [report["epochs"][str(epoch)]["valid"]["all"]["ndcg@20"] for epoch in range(3)]
    assert result["epoch_valid_score"] == [round(score, 4) for score in balanced]  # metric_decimal_place: 4
    assert all(abs(b - o) > 1e-4 for b, o in zip(balanced, overall))
    # the best epoch: highest rounded score, the later one on ties (RecBole's early stopping keeps score >= best)
    assert result["best_epoch"] == max(range(3), key=lambda epoch: (round(balanced[epoch], 4), epoch))
    assert report["selection"]["popularity_groups"]["epoch"] == result["best_epoch"]
    assert report["selection"]["users"]["epoch"] == max(range(3), key=lambda epoch: (round(overall[epoch], 4), epoch))
    assert "- popularity-balanced validation ndcg@20: epoch" in out.with_suffix(".md").read_text()
    # an earlier report (no selection yet) rendered again in place, without re-scoring
    selection = report.pop("selection")
    out.write_text(json.dumps(report))
    assert main([f"--report={out}"]) == 0
    again = json.loads(out.read_text())
    assert again["selection"] == selection and again["command"] == report["command"]
    assert "rendered again by `python benchmarks/epochs.py --report=" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="--metric=recall@5: not in the report"):
        main([f"--report={out}", "--metric=recall@5"])
    with pytest.raises(SystemExit, match="not a report written by"):
        main([f"--report={run_file}"])


@pytest.mark.parametrize("average", ["users", "popularity_groups"])
def test_validation_ranks_the_split_once_whatever_the_average(average, tiny_root, tiny_yaml, monkeypatch):
    from conftest import tiny_overrides
    from recbole.model.sequential_recommender import SASRec

    from recbole_sracl.quick_start import run

    calls = []
    full_sort_predict = SASRec.full_sort_predict
    monkeypatch.setattr(SASRec, "full_sort_predict",
                        lambda self, interaction: calls.append(len(interaction)) or full_sort_predict(self, interaction))
    result = run("SASRec", "tiny", [str(tiny_yaml)],
                 argv=tiny_overrides(tiny_root, "--epochs=2", f"--valid_metric_average={average}",
                                     "--group_by_target_popularity=[6]"))
    users = sum(result["test_result_by_group"]["target_popularity"][group]["users"]
                for group in result["test_result_by_group"]["target_popularity"])
    # two validations, RecBole's test pass and the per-group test pass: each split's users ranked once per pass
    assert sum(calls) == 4 * users


@pytest.mark.parametrize("overrides, message", [
    (["--valid_metric_average=groups"], "must be one of users, popularity_groups"),
    (["--valid_metric_average=popularity_groups", "--group_by_target_popularity=[]"], "which is empty"),
    (["--valid_metric_average=popularity_groups", "--metrics=['Recall','NDCG']", "--valid_metric=Recall@20"],
     "not Recall@20"),
    (["--valid_metric_average=popularity_groups", "--eval_args={'split': {'LS': 'valid_and_test'}, "
      "'order': 'TO', 'group_by': 'user', 'mode': 'uni100'}"], "not 'uni100'"),
])
def test_popularity_balanced_validation_refuses_what_it_cannot_compute(overrides, message, tiny_root, tiny_yaml):
    from conftest import tiny_overrides

    from recbole_sracl.errors import ConfigError
    from recbole_sracl.quick_start import build_config

    with pytest.raises(ConfigError, match=message):
        build_config("SASRec", "tiny", [str(tiny_yaml)], argv=tiny_overrides(tiny_root, *overrides))
