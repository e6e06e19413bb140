"""Expert trajectories: the authors' recipe (warm-up schedule), stored snapshots (0..keep and the final
epoch), one job per expert and the index DATM reads, and the resume protocol (kill, changed settings,
refused and truncated checkpoints, clean-up), at tiny CPU sizes."""
from __future__ import annotations

import json
import os
from collections import Counter

import h5py
import numpy as np
import pytest
import torch

from vdc.config import path, stage_settings
from vdc.errors import InputError, NonFiniteError
from vdc.formats.experts import Experts, expert_path
from vdc.resume import job_dir
from vdc.train import experts as X


@pytest.fixture()
def settings(tiny_config):
    """settings(**experts): the experts stage's settings of the tiny config (2 experts x 3 epochs)."""
    def build(**ex):
        return stage_settings(tiny_config(experts={"epochs": 3, **ex}), "experts", "tiny")
    return build


def ckpt_dir(s, out):
    return job_dir(s["workdir"], "experts", out)


def params(index_path):
    """Every expert's stored snapshots [S, P], read through the index."""
    with Experts(index_path) as ex:
        return [np.stack([ex.snapshot(e, ep).numpy() for ep in ex.stored_epochs]) for e in range(ex.num_experts)]


def attrs(path):
    with h5py.File(path, "r") as h5:
        return dict(h5.attrs)


def test_recipes(tiny_config):
    ex = tiny_config()["experts"]  # schema defaults: recipe authors, no explicit hyperparameters
    assert X.resolve_recipe(ex) == {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 40.0,
                                    "augment": True, "warmup_epochs": 10, "milestones": [90, 130],
                                    "warmup_start_factor": 0.1, "gamma": 0.1, "batch": 4}
    mtt = X.resolve_recipe({**ex, "recipe": "mtt", "lr": 0.05, "batch": 8})
    assert mtt["lr"] == 0.05 and mtt["momentum"] == 0 and mtt["augment"] is False and mtt["batch"] == 8
    assert mtt["warmup_epochs"] == 0 and mtt["milestones"] == []
    assert X.resolve_recipe({**ex, "warmup_epochs": 0, "milestones": [2]})["milestones"] == [2]


def test_authors_lr_per_epoch_is_the_references_chained_linear_lr():
    """Video-DC rded/squeeze.py 129-132, 158: SGD lr 0.02, ChainedScheduler(LinearLR(0.1 -> 1, 10 iters),
    MultiStepLR([90, 130], 0.1)) stepped once per epoch (its 150-epoch schedule, of which 50 epochs run)."""
    rec = X.RECIPES["authors"]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1, total_iters=10),
        torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[90, 130], gamma=0.1)])
    for epoch in range(150):
        hand = 0.02 * (0.1 + 0.9 * min(epoch, 10) / 10) * 0.1 ** ((epoch >= 90) + (epoch >= 130))
        assert X.lr_at_epoch(rec, epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        assert X.lr_at_epoch(rec, epoch) == pytest.approx(hand, rel=1e-12), epoch
        opt.step()
        sched.step()
    assert X.lr_at_epoch(rec, 0) == pytest.approx(0.002) and X.lr_at_epoch(rec, 49) == 0.02
    assert [X.lr_at_epoch(X.RECIPES["mtt"], e) for e in (0, 5, 100)] == [0.01, 0.01, 0.01]


def test_stores_epochs_up_to_keep_and_the_final_one(frames_file, settings, tmp_path):
    out = tmp_path / "experts.h5"
    s = settings(keep_epochs=1, dtype="float16")
    X.train_experts(frames_file, out, s)
    for i in range(2):
        a = attrs(expert_path(out, i))
        assert a["keep_epochs"] == 1 and a["epochs"] == 3 and a["index"] == i and len(a["content_id"]) == 32
        with h5py.File(expert_path(out, i), "r") as h5:
            assert h5["params"].shape == (3, a["num_params"]) and h5["params"].dtype == np.float16
            assert list(h5["epochs"][:]) == [0, 1, 3]                    # 0..keep and the trained expert
            shapes = h5["param_shapes"][:]
            assert int(sum(np.prod([d for d in row if d >= 0]) for row in shapes)) == a["num_params"]
        assert np.allclose(json.loads(a["lr"]), [0.002, 0.0038, 0.0056])       # the authors' warm-up, per epoch
        assert 0 <= a["test_top1"] <= 100
    with Experts(out) as ex:
        assert ex.num_experts == 2 and ex.stored_epochs == [0, 1, 3] and ex.final_epoch == 3
        assert not torch.equal(ex.snapshot(0, 1), ex.snapshot(0, 3))      # the final snapshot is the last epoch's
        assert not torch.equal(ex.snapshot(0, 0), ex.snapshot(1, 0))      # independent initialisations
        with pytest.raises(IndexError, match="keep_epochs"):
            ex.snapshot(0, 2)
    assert not ckpt_dir(s, expert_path(out, 0)).exists()                  # checkpoints removed after success


def test_one_job_per_expert_then_the_index(frames_file, settings, tmp_path):
    s = settings(recipe="mtt")
    X.train_experts(frames_file, tmp_path / "all" / "experts.h5", s)     # every expert in one process
    index = tmp_path / "jobs" / "experts.h5"
    for i in (1, 0):                                                       # the jobs, in any order, each given
        job = {**s, "experts": {k: v for k, v in s["experts"].items() if k != "num_experts"}}  # what Snakemake gives
        X.train_expert(frames_file, expert_path(index, i), job, i)
    assert not index.exists()
    X.index_experts([expert_path(index, i) for i in (1, 0)], index, s)
    for a, b in zip(params(tmp_path / "all" / "experts.h5"), params(index)):
        np.testing.assert_array_equal(a, b)
    assert attrs(index)["content_id"] == attrs(tmp_path / "all" / "experts.h5")["content_id"]
    assert str(expert_path(path("experts", results="r", dataset="d"), 3)) == path("expert", results="r", dataset="d",
                                                                                expert=3)   # the workflow's file

    # an expert file rewritten after the index was written is refused
    X.train_expert(frames_file, expert_path(index, 1), settings(recipe="mtt", seed=5), 1)
    with pytest.raises(InputError, match="changed since"):
        Experts(index)
    with pytest.raises(InputError, match="not an experts index"):
        Experts(expert_path(index, 0))


def test_workflow_runs_one_job_per_expert_and_datm_reads_the_index():
    """The toy study's DAG (Snakemake's dry run): experts.num_experts jobs of rule experts, one index job."""
    from vdc.plan import dag_jobs

    cfg, jobs = dag_jobs(["config.yaml"], {"experts": {"num_experts": 3}})
    rules = Counter(j.rule for j in jobs)
    experts = sorted(int(j.wildcards["expert"]) for j in jobs if j.rule == "experts")
    assert experts == [0, 1, 2] and rules["experts_index"] == len(cfg["study"]["datasets"])


def test_killed_expert_job_resumes_bit_identically(frames_file, settings, tmp_path, kill_after):
    s = settings()                       # authors recipe: crops, flips and dropout draw from both RNGs
    X.train_expert(frames_file, tmp_path / "a.h5", s, 1)

    saved = kill_after(2)                # one save per epoch: killed after epoch 2 of 3
    with pytest.raises(KeyboardInterrupt):
        X.train_expert(frames_file, tmp_path / "b.h5", s, 1)
    assert not (tmp_path / "b.h5").exists()                              # no partial output
    assert saved[-1]["state"]["epoch"] == 2
    assert [p.name for p in ckpt_dir(s, tmp_path / "b.h5").iterdir()] == ["expert.pt"]
    kill_after(None)
    X.train_expert(frames_file, tmp_path / "b.h5", s, 1)
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        np.testing.assert_array_equal(a["params"][:], b["params"][:])
        assert a.attrs["content_id"] == b.attrs["content_id"]           # test top-1, losses, lr, seed too
    assert not ckpt_dir(s, tmp_path / "b.h5").exists()


def test_all_in_one_rerun_reuses_finished_experts(frames_file, settings, tmp_path, kill_after):
    s = settings(recipe="mtt")
    X.train_experts(frames_file, tmp_path / "a" / "experts.h5", s)
    saved = kill_after(4)                # expert 0 written, expert 1 killed after epoch 1
    with pytest.raises(KeyboardInterrupt):
        X.train_experts(frames_file, tmp_path / "b" / "experts.h5", s)
    assert expert_path(tmp_path / "b" / "experts.h5", 0).exists() and saved[-1]["state"]["epoch"] == 1
    kill_after(None)
    saved = kill_after(100)
    X.train_experts(frames_file, tmp_path / "b" / "experts.h5", s)
    assert len(saved) == 4 + 2                                           # only expert 1's epochs 2 and 3
    kill_after(None)
    for a, b in zip(params(tmp_path / "a" / "experts.h5"), params(tmp_path / "b" / "experts.h5")):
        np.testing.assert_array_equal(a, b)


def test_changed_settings_never_resume_an_old_checkpoint(frames_file, settings, tmp_path, kill_after):
    old, new = settings(recipe="mtt"), settings(recipe="mtt", lr=0.05)
    X.train_expert(frames_file, tmp_path / "fresh.h5", new, 0)
    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        X.train_expert(frames_file, tmp_path / "run.h5", old, 0)
    kill_after(None)
    X.train_expert(frames_file, tmp_path / "run.h5", new, 0)                # same job, other settings
    assert attrs(tmp_path / "fresh.h5")["content_id"] == attrs(tmp_path / "run.h5")["content_id"]


class Payload:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_a_pickled_object_and_a_truncated_checkpoint(frames_file, settings, tmp_path, kill_after):
    s = settings(recipe="mtt")
    X.train_expert(frames_file, tmp_path / "fresh.h5", s, 0)
    folder = ckpt_dir(s, tmp_path / "run.h5")
    folder.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"identity": "x", "state": Payload(marker)}, folder / "expert.pt")
    torch.load(folder / "expert.pt", weights_only=False)                 # the payload is real: an unsafe
    assert marker.exists()                                               # load runs it
    marker.unlink()
    X.train_expert(frames_file, tmp_path / "run.h5", s, 0)
    assert not marker.exists()                                           # never executed
    assert (folder / "expert.pt.corrupt").exists()                       # moved aside
    assert attrs(tmp_path / "fresh.h5")["content_id"] == attrs(tmp_path / "run.h5")["content_id"]

    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        X.train_expert(frames_file, tmp_path / "run2.h5", s, 0)
    kill_after(None)
    ck = ckpt_dir(s, tmp_path / "run2.h5") / "expert.pt"
    ck.write_bytes(ck.read_bytes()[:ck.stat().st_size // 2])             # truncated, as a full disk leaves it
    X.train_expert(frames_file, tmp_path / "run2.h5", s, 0)
    assert ck.with_name("expert.pt.corrupt").exists()
    assert attrs(tmp_path / "fresh.h5")["content_id"] == attrs(tmp_path / "run2.h5")["content_id"]


def test_nan_training_loss_stops_the_job(frames_file, settings, tmp_path):
    with pytest.raises(NonFiniteError, match=r"experts tiny \(expert 0\): the training loss is (nan|inf)"):
        X.train_expert(frames_file, tmp_path / "e.h5", settings(recipe="mtt", lr=1e6), 0)
    assert not (tmp_path / "e.h5").exists()


@pytest.mark.parametrize("mode", ["off", "on"])
def test_experts_flip_as_the_dataset_says(frames_file, tiny_config, tmp_path, monkeypatch, mode):
    """datasets.<name>.hflip off: no training view of an expert is ever mirrored; on: half of them."""
    from vdc.data import clips as C

    real, flips = C.crop_flip, []

    def spy(*args, **kwargs):
        x, flipped = real(*args, **kwargs)
        flips.append(flipped)
        return x, flipped
    monkeypatch.setattr(C, "crop_flip", spy)
    cfg = tiny_config(experts={"epochs": 2}, datasets={"tiny": {"hflip": mode}})
    X.train_expert(frames_file, tmp_path / "e.h5", stage_settings(cfg, "experts", "tiny"), 0)
    flipped = torch.cat(flips)
    assert len(flipped) == 2 * 9                                       # every view of 2 epochs x 9 videos
    assert (not flipped.any()) if mode == "off" else flipped.any()
