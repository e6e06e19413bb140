"""scripts/gpu-check.sh at tiny sizes on the CPU: every part runs the code it runs on a GPU and the
report puts each figure next to its target. No timing is asserted (the CPU's figures mean nothing)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vdc.bench.gpucheck import report

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about a minute on 2 cores: one process per part


def test_the_check_runs_every_part_at_tiny_sizes(tmp_path):
    env = {**os.environ, "VDC_PYTHON": sys.executable}
    env.pop("OUT", None)
    env.pop("VDC_TINY_OPS", None)
    res = subprocess.run(["bash", "scripts/gpu-check.sh", "--tiny", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu-check.json").read_text())
    parts = rep["parts_present"]
    assert all(parts[p] for p in ("protocol", "datm", "edc", "evaluation", "smoke")), parts
    figures = {f["measure"]: f for f in rep["figures"]}
    assert any(m.startswith("protocol step / bare step") and f["measured"] is not None for m, f in figures.items())
    assert any(m.startswith("MiniC3D train step at batch") and f["measured"] is not None for m, f in figures.items())
    assert any(m.startswith("DATM recompute peak") and f["measured"] is not None for m, f in figures.items())
    smoke = rep["details"]["smoke"]
    assert smoke["ok"], smoke["stages"]
    stages = {s["stage"] for s in smoke["stages"]}
    assert {"teacher", "experts", "stats", "condense edc", "condense datm", "evaluate random i3d_r18"} <= stages
    agreement = rep["details"]["datm"]["agreement"]
    assert agreement[0]["variant"].startswith("reference") and {a["variant"] for a in agreement} >= {"recompute float32"}
    assert (tmp_path / "gpu-check.log").stat().st_size > 0


def _write(folder: Path, name: str, obj) -> None:
    (folder / f"{name}.json").write_text(json.dumps(obj))


def test_report_compares_each_figure_with_its_target(tmp_path):
    gib = 2 ** 30
    _write(tmp_path, "protocol", {
        "clip": [8, 112, 112],
        "rows": [{"variant": "fp32", "batch": 10, "full_over_bare": 0.7, "host_syncs_per_step": 3},
                 {"variant": "bf16_cl", "batch": 10, "full_over_bare": 0.85, "host_syncs_per_step": 0},
                 {"variant": "bf16_cl", "batch": 100, "full_over_bare": 0.75, "host_syncs_per_step": 0}],
        "ceiling": {"matmul_bf16_tflops": 760.0, "rows": [
            {"variant": "bf16_cl", "step_s": 0.04, "achieved_tflops": 200.0, "fraction_of_bf16_ceiling": 200 / 760}]}})
    _write(tmp_path, "datm", {"args": {"batch_syn": 101, "frames": 8, "size": 112}, "recompute_peak_ratio": 1.08, "timing": [
        {"steps": 20, "mode": "naive", "time_s": 1.7, "peak_bytes": 69 * gib},
        {"steps": 20, "mode": "recompute", "time_s": 2.3, "peak_bytes": 6.5 * gib}]})
    _write(tmp_path, "edc", {"variants": {"bf16": {"three in rotation": {"peak_gib": 4.2, "networks": []}}}})
    _write(tmp_path, "evaluation", {"wall_s": 21.0, "epochs": 300, "iters_per_epoch": 11, "test_passes": 10,
                                    "num_test": 3783, "labels": "multisl", "prepare_s": 9.0})
    rep = report(tmp_path)
    met = {f["measure"]: f["met"] for f in rep["figures"]}
    assert met["protocol step / bare step, 8x112x112, batch 10"] is True   # the default variant (bf16_cl)
    assert met["protocol step / bare step, 8x112x112, batch 100"] is False
    assert met["one UCF101 IPC-1 MiniC3D evaluation (300 epochs + late test passes)"] is True
    assert met["DATM peak memory (recompute), 20 steps, 101 clips 8x112^2"] is False    # 6.5 GiB > 6
    assert met["DATM recompute time / naive time, 20 steps"] is False                   # 1.35 > 1.25
    assert met["EDC peak memory, UCF101 IPC 1, MiniC3D + I3D + SlowOnly (bf16)"] is True
    assert met["EDC peak memory, UCF101 IPC 1, MiniC3D + I3D + SlowOnly (fp32)"] is None  # not measured
    assert met["MiniC3D train step at batch 256 / bf16 matmul ceiling"] is True          # 26 %
    assert met["paper-scale smoke run"] is None
