"""The data rules under Snakemake (dry run, lint, a tiny real run of `frames`) and the configs.

The rules run in a temporary copy of workflow/ with a Snakefile that includes only common.smk,
and data.smk, so these tests do not depend on the other rule files."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vdc.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY = {
    "study": {"datasets": ["toy"], "methods": ["random"], "ipc": [1], "seeds": [0]},
    "datasets": {"toy": {
        "format": "toy", "video_root": "data/toy/videos", "annotations": "data/toy/ucfTrainTestlist",
        "toy": {"classes": 2, "train_per_class": 2, "test_per_class": 1, "min_frames": 8, "max_frames": 10,
                "size": [32, 32], "seed": 0},
        "storage_size": [32, 32], "max_frames": 8, "input_size": 24}},
    "methods": {"random": {}},
}


@pytest.fixture()
def workflow_dir(tmp_path):
    shutil.copytree(REPO / "workflow" / "rules", tmp_path / "workflow" / "rules")
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    shutil.copytree(REPO / "envs", tmp_path / "envs")
    (tmp_path / "Snakefile").write_text(
        'configfile: "tiny.yaml"\n\n\ninclude: "workflow/rules/common.smk"\n'
        'include: "workflow/rules/data.smk"\n')
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path


def _smk(cwd, *args):
    return subprocess.run(SNAKEMAKE + ["--cores", "2", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_dry_run_and_lint(workflow_dir):
    r = _smk(workflow_dir, "frames", "-n", "--quiet", "rules")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "toy_dataset" in r.stdout and "extract" in r.stdout
    r = _smk(workflow_dir, "--lint")
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_frames_target_runs(workflow_dir):
    r = _smk(workflow_dir, "frames")
    assert r.returncode == 0, r.stderr[-3000:]
    from vdc.data.frames import Frames

    with Frames(workflow_dir / "results" / "frames" / "toy.h5") as fr:
        assert fr.classes == ["TranslateHorizontal", "TranslateUp"]
        assert fr.split.tolist() == [0, 0, 0, 0, 1, 1] and fr.frame_shape == (32, 32, 3)
        assert fr.stored_lengths.max() <= 8 and fr.attrs["num_failed"] == 0   # max_frames caps the stored frames
    assert (workflow_dir / "results" / "frames" / "toy.failed.tsv").read_text() == "path\treason\n"
    assert (workflow_dir / "logs" / "extract" / "dataset=toy.log").exists()
    assert (workflow_dir / "benchmarks" / "extract" / "dataset=toy.tsv").exists()
    assert len(list((workflow_dir / "data" / "toy" / "videos").rglob("*.mp4"))) == 6
    r = _smk(workflow_dir, "frames", "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_toy_layout_mismatch_is_an_error(workflow_dir):
    cfg = yaml.safe_load((workflow_dir / "tiny.yaml").read_text())
    cfg["datasets"]["toy"]["video_root"] = "data/elsewhere"
    (workflow_dir / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(workflow_dir, "frames", "-n")
    assert r.returncode != 0 and "video_root: <root>/videos" in r.stdout + r.stderr


def test_wrong_key_is_named():
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["datasets"]["toy"]["storage_sise"] = [32, 32]
    with pytest.raises(ConfigError, match="storage_sise"):
        validate_config(cfg)
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["datasets"]["toy"]["toy"]["clases"] = 3
    with pytest.raises(ConfigError, match="clases"):
        validate_config(cfg)
