"""The condense stage (vdc/condense/stage.py): Context, method lookup, validation, attrs, atomic write,
the command line, a custom method from examples/ run through the stage, and the code each condense job
runs (its fingerprint's module set)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vdc.condense import register_method
from vdc.condense.stage import run_condense
from vdc.condensed import CondensedSet
from vdc.config import load_config, stage_settings
from vdc.data.frames import Frames
from vdc.fingerprint import code_modules, job_code_roots
from vdc.formats.teacher import save_teacher
from vdc.models import create_model
from vdc.resume import job_dir

REPO = Path(__file__).resolve().parents[1]
METHODS = {"random": {}, "herding": {"batch": 4}, "rded": {"mipc": 3, "clips_per_video": 3, "batch": 5}}


@pytest.fixture()
def job(tmp_path, make_frames, tiny_config):
    """A tiny frames file, a tiny trained-format MiniC3D teacher file and the config."""
    make_frames(tmp_path / "tiny.h5")
    torch.manual_seed(0)
    save_teacher(tmp_path / "minic3d.pt", "minic3d", 3, {"width": 0.125, "dropout": 0.5},
                 create_model("minic3d", 3, width=0.125), {})
    return tmp_path, tiny_config(methods=METHODS)


def settings_for(cfg, method, ipc=2, seed=0, **wc):
    return stage_settings(cfg, "condense", "tiny", method=method, ipc=ipc, seed=seed, **wc)


@pytest.mark.parametrize("method", ["random", "herding", "rded"])
def test_stage_writes_a_valid_set_with_attrs(job, method):
    tmp, cfg = job
    st = settings_for(cfg, method)
    out = tmp / "out" / f"{method}.h5"
    run_condense(tmp / "tiny.h5", out, st, teacher_paths={"minic3d": tmp / "minic3d.pt"})
    cs = CondensedSet.read(out)
    assert np.bincount(cs.labels, minlength=3).tolist() == [2, 2, 2]
    a = cs.attrs
    assert (a["dataset"], a["method"], a["ipc"], a["seed"], a["t_c"]) == ("tiny", method, 2, 0, 8)
    assert (a["sampling"], a["interpolation"], a["num_classes"]) == ("naive", "none", 3)
    assert a["settings"]["base"] == method and a["frames_file"] == str(tmp / "tiny.h5")
    assert a["wall_time_s"] >= 0 and a["device"] == "cpu" and a["value_range"] == "uint8"
    assert not job_dir(st["workdir"], "condense", out).exists()   # nothing left in the workdir
    again = tmp / "out" / f"{method}-again.h5"
    run_condense(tmp / "tiny.h5", again, st, teacher_paths={"minic3d": tmp / "minic3d.pt"})
    np.testing.assert_array_equal(CondensedSet.read(again).clips, cs.clips)  # same seed, same set


def test_stage_needs_the_teacher_it_names(job):
    tmp, cfg = job
    with pytest.raises(KeyError, match="no trained minic3d teacher"):
        run_condense(tmp / "tiny.h5", tmp / "x.h5", settings_for(cfg, "herding"))
    assert not (tmp / "x.h5").exists()


def _bad(kind):
    def condense(ctx):
        fr = ctx.frames
        vids = np.concatenate([fr.class_ids("train", c)[:ctx.ipc] for c in range(ctx.num_classes)])
        labels = fr.labels[vids].copy()
        clips = np.stack([fr.read_frames(int(v), np.arange(8)) for v in vids])
        if kind == "label_range":
            labels[0] = 7
        elif kind == "wrong_class":
            labels[0], labels[-1] = labels[-1], labels[0]
        elif kind == "frames":
            clips = clips[:, :5]
        elif kind == "too_many":
            vids, labels, clips = np.r_[vids, vids[:1]], np.r_[labels, labels[:1]], np.r_[clips, clips[:1]]
        elif kind == "too_few":
            vids, labels, clips = vids[1:], labels[1:], clips[1:]
        return CondensedSet(clips, labels, source_video=vids)
    return condense


@pytest.mark.parametrize("kind,message", [("label_range", "labels outside 0..2"),
                                          ("wrong_class", "belongs to another class"),
                                          ("frames", "T_c=8"), ("too_many", "more than IPC=2"),
                                          ("too_few", "fewer than IPC=2 clips in classes [0]")])
def test_stage_rejects_invalid_sets(job, kind, message):
    tmp, cfg = job
    name = f"bad_{kind}"
    register_method(name)(_bad(kind))
    cfg["methods"][name] = {}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_condense(tmp / "tiny.h5", tmp / "bad.h5", settings_for(cfg, name))
    assert not (tmp / "bad.h5").exists()


def test_custom_method_from_examples(job, monkeypatch):
    tmp, cfg = job
    monkeypatch.syspath_prepend(str(REPO))
    cfg["methods"]["my_method"] = {"module": "examples.my_method"}
    run_condense(tmp / "tiny.h5", tmp / "mine.h5", settings_for(cfg, "my_method", ipc=1))
    cs = CondensedSet.read(tmp / "mine.h5")
    fr = Frames(tmp / "tiny.h5")
    for c in range(3):
        ids = fr.class_ids("train", c)
        assert cs.source_video[cs.labels == c].tolist() == [ids[np.argmax(fr.lengths[ids])]]
    assert cs.attrs["method"] == "my_method" and cs.attrs["settings"]["module"] == "examples.my_method"


def test_command_line_with_config(job):
    tmp, cfg = job
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "cli.h5"
    cmd = [sys.executable, "-m", "vdc", "condense", "--frames", str(tmp / "tiny.h5"), "--out", str(out),
           "--teacher", f"minic3d={tmp / 'minic3d.pt'}", "--config", str(tmp / "config.yaml"), "--dataset", "tiny",
           "--method", "rded", "--ipc", "1", "--seed", "3", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    cs = CondensedSet.read(out)
    assert cs.attrs["seed"] == 3 and len(cs.labels) == 3
    direct = run_condense(tmp / "tiny.h5", tmp / "direct.h5", settings_for(cfg, "rded", ipc=1, seed=3),
                          teacher_paths={"minic3d": tmp / "minic3d.pt"})
    np.testing.assert_array_equal(direct.clips, cs.clips)  # the CLI builds the same settings


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "envs" / "vdc.yaml").exists(), reason="envs/vdc.yaml (the rules' conda env) not written yet")
def test_snakemake_runs_condense_for_builtin_and_custom_methods(tmp_path, make_frames, tiny_config):
    """The condense rule on a tiny config: Random and the examples/ method, no teacher needed."""
    (tmp_path / "results" / "frames").mkdir(parents=True)
    make_frames(tmp_path / "results" / "frames" / "tiny.h5")
    cfg = tiny_config(methods={"my_method": {"module": "examples.my_method"}},
                      datasets={"tiny": {"format": "toy", "annotations": "data/tiny/ucfTrainTestlist",
                                         "video_root": "data/tiny/videos"}})
    cfg.update(results="results", workdir="work", logs="logs")
    cfg["study"]["methods"] = ["random", "my_method"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/condensed/tiny/{m}/ipc1-tc8-naive-none-seed0.h5" for m in ("random", "my_method")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # `examples` importable from the job's cwd
    res = subprocess.run([sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"),
                          "-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-c1",
                          "--allowed-rules", "condense"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for t in targets:
        cs = CondensedSet.read(tmp_path / t)
        assert len(cs.labels) == 3 and cs.attrs["ipc"] == 1
    assert (tmp_path / "logs" / "condense" / "dataset=tiny" / "method=my_method").is_dir()


def _modules(cfg, method):
    st = stage_settings(cfg, "condense", cfg["study"]["datasets"][0], method=method, ipc=1, seed=0)
    return {name for name, _ in code_modules(tuple(sorted(set(job_code_roots("condense", st)))))}


def test_each_condense_job_runs_only_its_own_method_code():
    """Stage boundaries the code fingerprint follows (vdc/fingerprint.py): a method's module is in its
    own jobs' code only, and no condense job runs another stage's code (the teacher's training, the
    experts' training, the statistics pass): those reach it through their files."""
    cfg = load_config(REPO / "config.yaml")
    methods = ["random", "herding", "rded", "edc", "datm"]
    code = {m: _modules(cfg, m) for m in methods}
    for m in methods:
        assert {f"vdc.condense.{o}" for o in methods} & code[m] == {f"vdc.condense.{m}"}, m
        assert not {"vdc.train.teacher", "vdc.train.experts", "vdc.condense.edc_stats"} & code[m], m
    assert "vdc.condense.select" in code["random"] & code["herding"] & code["rded"]
    assert "vdc.formats.experts" in code["datm"] and "vdc.formats.stats" in code["edc"]
