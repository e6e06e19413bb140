"""A user's own dataset on the defaults (issue 14): one `datasets:` entry in another layout (Kinetics-400
CSVs) with uneven class sizes, listed in study.datasets, everything else from config.yaml. The whole
study plans, and its `full` run (every training clip, IPC 0) is condensed and valid — "full data" means
all of that dataset's training clips, whatever its class sizes. Its settings carry no toy-generator keys.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vdc.config import load_config
from vdc.data.toy import CLASSES, encode_video, render_video

pytestmark = pytest.mark.slow   # extraction and one condense job through Snakemake (~30 s)

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZES = [4, 2, 5, 3]      # uneven on purpose (a class smaller than the toy's IPC 5, one larger)
TOY = {"size": [48, 64], "min_frames": 20, "max_frames": 40}


def write_k400_layout(root: Path) -> None:
    """Videos <root>/videos/{train,val}/<id>_<start>_<end>.mp4 and <root>/annotations/{train,validate}.csv."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split, sub, csv_name, sizes in (("train", "train", "train.csv", TRAIN_SIZES),
                                        ("val", "val", "validate.csv", [2] * len(TRAIN_SIZES))):
        (root / "videos" / sub).mkdir(parents=True)
        lines = ["label,youtube_id,time_start,time_end,split"]
        for c, n in enumerate(sizes):
            for i in range(n):
                yid = f"{split}{c}v{i}xxxxxx"[:11]
                encode_video(render_video(c, rng, TOY), root / "videos" / sub / f"{yid}_{i:06d}_{i + 10:06d}.mp4")
                lines.append(f"{CLASSES[c].lower()},{yid},{i},{i + 10},{split}")
        (root / "annotations" / csv_name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    write_k400_layout(root / "data")
    cfg = {"extends": str(REPO / "config.yaml"),
           "results": str(root / "results"), "workdir": str(root / "work"), "logs": str(root / "logs"),
           "datasets": {"mine": {"format": "k400", "video_root": str(root / "data" / "videos"),
                                 "annotations": str(root / "data" / "annotations"),
                                 "storage_size": [48, 64], "input_size": 44}},
           "study": {"datasets": ["mine"]}}
    (root / "mine.yaml").write_text(yaml.safe_dump(cfg))
    return root


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root),
                           "--configfile", str(root / "mine.yaml"), "--cores", "2", *args],
                          capture_output=True, text=True, timeout=600)


def test_its_settings_carry_no_toy_keys(own):
    cfg = load_config(own / "mine.yaml")
    assert "toy" not in cfg["datasets"]["mine"] and cfg["study"]["datasets"] == ["mine"]
    out = subprocess.run([sys.executable, "-m", "vdc", "settings", "--config", str(own / "mine.yaml"),
                          "--stage", "extract", "--dataset", "mine"], capture_output=True, text=True, check=True)
    assert '"toy"' not in out.stdout and json.loads(out.stdout)["dataset"]["format"] == "k400"


def test_the_whole_study_plans_and_the_full_run_takes_every_clip(own):
    plan = snakemake(own, "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-3000:]
    for rule in ("extract", "teacher", "condense", "evaluate", "tables"):
        assert rule in plan.stdout
    full = own / "results" / "condensed" / "mine" / "full" / "ipc0-tc8-naive-none-seed0.h5"
    run = snakemake(own, str(full))
    assert run.returncode == 0, run.stderr[-3000:]
    from vdc.condensed import CondensedSet

    cs = CondensedSet.read(full)
    classes = sorted(CLASSES[c].lower() for c in range(len(TRAIN_SIZES)))    # K400: labels sorted by name
    want = [TRAIN_SIZES[[CLASSES[c].lower() for c in range(len(TRAIN_SIZES))].index(name)] for name in classes]
    assert np.bincount(cs.labels, minlength=len(want)).tolist() == want and cs.attrs["ipc"] == 0
