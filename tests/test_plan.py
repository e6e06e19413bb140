"""python -m vdc plan: job counts from Snakemake's own DAG (also for paper configs whose annotation files
do not exist here), the cost model's lookups, and the bench files it reads."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vdc import plan as P
from vdc.bench.anchors import anchors_costs

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "configs").glob("[a-z0-9]*.yaml"))
PAPER = [p for p in PAPER if p.stem in ("ucf101", "hmdb51", "ssv2", "k400")]


def test_dry_run_blocks_are_read_and_checked_against_the_job_stats():
    text = """Job stats:
job         count
--------  -------
evaluate        2
all             1
total           3

[Mon]
rule evaluate:
    input: a
    log: logs/evaluate/x.log
    wildcards: dataset=toy, method=random, ipc=1
    resources: tmpdir=/tmp

rule evaluate:
    log: logs/evaluate/y.log
    wildcards: dataset=toy, method=edc, ipc=5

localrule all:
    input: x
"""
    jobs = P.parse_dry_run(text)
    assert [(j.rule, j.runs) for j in jobs] == [("evaluate", True), ("evaluate", True), ("all", False)]
    assert jobs[1].wildcards == {"dataset": "toy", "method": "edc", "ipc": "5"}
    with pytest.raises(RuntimeError, match="Job stats"):
        P.parse_dry_run(text.replace("evaluate        2", "evaluate        3"))


def _snakemake_counts(configfile: Path, workdir: Path) -> dict:
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules", "--snakefile",
                          str(ROOT / "Snakefile"), "--configfile", str(configfile), "-d", str(workdir),
                          "--workflow-profile", "none", "--cores", "1"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    counts, on = {}, False
    for line in (res.stdout + res.stderr).splitlines():
        if line.strip() == "Job stats:":
            on, counts = True, {}
        elif on and line.split() and line.split()[0] == "total":
            on = False
        elif on and len(line.split()) == 2 and line.split()[1].isdigit():
            counts[line.split()[0]] = int(line.split()[1])
    return counts


def test_the_default_study_plans_the_jobs_snakemake_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no benchmarks/vdc-costs.json or results/ of a real run here
    p = P.plan([str(ROOT / "config.yaml")], bench=None)
    assert {r: v["jobs"] for r, v in p["rules"].items()} == _snakemake_counts(ROOT / "config.yaml", tmp_path)
    assert p["rules"]["evaluate"]["jobs"] > 50 and p["rules"]["teacher"]["jobs"] == 1
    assert p["bench"]["note"].startswith("no bench file")  # the built-in H200 figures, said so
    assert p["missing"], "the H200 figures have no toy-sized entries: the plan must say what is missing"
    assert "≥" in P.render(p)


@pytest.mark.slow
@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_paper_configs_plan_without_their_annotation_files(config, tmp_path, monkeypatch):
    """The annotation files of configs/*.yaml do not exist here; the dry run still counts every job, and
    the built-in H200 figures cover every operation of the paper's settings."""
    monkeypatch.chdir(tmp_path)
    ann = P.load_config(config)["datasets"]
    assert not any(Path(d["annotations"]).exists() for d in ann.values())
    p = P.plan([str(config)])
    cfg, path = P._standalone_config([str(config)], None, tmp_path)
    assert {r: v["jobs"] for r, v in p["rules"].items()} == _snakemake_counts(path, tmp_path / "run")
    assert p["missing"] == [], p["missing"]
    for rule in ("teacher", "condense", "evaluate", "extract"):
        assert p["rules"][rule]["jobs"] >= 1 and p["rules"][rule]["seconds"] > 0, rule
    assert p["total"]["device_seconds"] > 3600 and p["total"]["peak_bytes"] > 2 ** 30


# ----------------------------------------------------------------------------- the cost lookups

def _costs(entries):
    return P.Costs({"format": "vdc-costs-1", "device": "test", "source": "test", "entries": entries}, "test")


def _train(batch, seconds, frames=8, peak=None):
    return {"op": "train", "arch": "minic3d", "width": 1.0, "frames": frames, "size": 112, "batch": batch,
            "seconds": seconds, "peak_bytes": peak}


def test_batches_are_interpolated_extrapolated_and_scaled_by_frames():
    c = _costs([_train(10, 1.0, peak=100.0), _train(100, 4.0, peak=1000.0)])
    key = {"arch": "minic3d", "width": 1.0, "frames": 8, "size": 112}
    assert c.lookup("train", {**key, "batch": 10}) == (1.0, 100.0)
    assert c.lookup("train", {**key, "batch": 55})[0] == pytest.approx(2.5)
    assert c.lookup("train", {**key, "batch": 190})[0] == pytest.approx(7.0)
    assert c.lookup("train", {**key, "batch": 2})[0] == pytest.approx(max(1.0 - 8 / 30, 0.2))
    assert c.lookup("train", {**key, "frames": 16, "batch": 10})[0] == pytest.approx(2.0)  # 3-D nets: ~ frames
    assert c.lookup("train", {**key, "arch": "i3d_r18", "batch": 10}) is None
    assert c.missing and "i3d_r18" in next(iter(c.missing))
    one = _costs([_train(64, 6.4)])
    assert one.lookup("train", {**key, "batch": 10})[0] == pytest.approx(1.0)  # proportional from one entry


def test_datm_iterations_scale_with_steps_and_batch_and_memory_only_when_naive():
    e = {"op": "datm", "arch": "minic3d_in", "width": 1.0, "frames": 8, "size": 112, "syn_steps": 20, "batch_syn": 101,
         "seconds": 2.0, "peak_bytes": 6.0}
    c = _costs([{**e, "memory": "recompute"}, {**e, "memory": "naive", "peak_bytes": 60.0}])
    key = {"arch": "minic3d_in", "width": 1.0, "frames": 8, "size": 112, "t_c": 8}
    t, m = c.lookup("datm", {**key, "memory": "recompute", "syn_steps": 40, "batch_syn": 202})
    assert (t, m) == (pytest.approx(8.0), pytest.approx(12.0))
    t, m = c.lookup("datm", {**key, "memory": "naive", "syn_steps": 40, "batch_syn": 101})
    assert (t, m) == (pytest.approx(4.0), pytest.approx(120.0))


def test_the_built_in_h200_figures_are_labelled_and_well_formed():
    data = anchors_costs()
    assert data["format"] == "vdc-costs-1" and "not measured by vdc" in data["source"]
    for e in data["entries"]:
        assert e["origin"] in ("measured", "proxy", "derived", "assumed"), e
    c = P.Costs(data, "anchors")
    t, m = c.lookup("datm", {"arch": "minic3d_in", "width": 1.0, "frames": 8, "size": 112, "t_c": 8,
                             "memory": "recompute", "syn_steps": 20, "batch_syn": 101})
    assert t == pytest.approx(2.17) and m == pytest.approx(6.1 * 2 ** 30)


def test_compare_reads_snakemake_benchmark_files(tmp_path):
    for rule, wc, secs in (("evaluate", "a=1", 5.0), ("evaluate", "a=2", 7.0), ("edc_stats", "b=1", 3.0)):
        f = tmp_path / rule / f"{wc}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\th:m:s\tmax_rss\n{secs}\t0:00:0{int(secs)}\t100\n")
    got = P.measured_benchmarks(tmp_path)
    assert got == {"evaluate": {"jobs": 2, "seconds": 12.0}, "stats": {"jobs": 1, "seconds": 3.0}}


def test_costs_bench_measures_an_ops_list_into_a_file_the_plan_reads(tmp_path):
    ops = {"format": "vdc-ops-1", "studies": [["test"]], "performance": {"bf16": True, "channels_last_3d": True,
                                                                        "fused_optimizer": True, "tf32": True,
                                                                        "datm_bf16": False,
                                                                        "cpu_channels_last_3d": False},
           "deterministic": True, "toy": None, "datm": [],
           "groups": [{"op": "train", "key": {"arch": "minic3d", "width": 0.125, "frames": 8, "size": 48},
                       "batches": [2, 4], "storage": [52, 56], "classes": 3, "clip_interval": 1},
                      {"op": "forward", "key": {"arch": "minic3d", "width": 0.125, "frames": 8, "size": 48},
                       "batches": [4], "storage": [52, 56], "classes": 3, "clip_interval": 1}]}
    (tmp_path / "ops.json").write_text(json.dumps(ops))
    res = subprocess.run([sys.executable, "-m", "vdc.bench", "costs", "--ops", str(tmp_path / "ops.json"), "--out",
                          str(tmp_path / "costs.json"), "--steps", "1", "--warmup", "0", "--skip", "load", "startup"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    c = P.Costs.load(tmp_path / "costs.json")
    assert c.device.startswith("cpu")
    t, m = c.lookup("train", {"arch": "minic3d", "width": 0.125, "frames": 8, "size": 48, "batch": 3})
    assert t > 0 and m > 0
    assert c.lookup("forward", {"arch": "minic3d", "width": 0.125, "frames": 8, "size": 48, "batch": 8})[0] > 0
