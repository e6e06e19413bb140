"""Expert trajectories: stored snapshots, file layout, and the resume protocol (kill, changed settings,
refused and truncated checkpoints, clean-up), at tiny CPU sizes."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from vdc.config import stage_settings
from vdc.errors import NonFiniteError
from vdc.formats.experts import Experts
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


def params(path):
    with h5py.File(path, "r") as h5:
        return [h5[f"expert_{i}/params"][:] for i in range(int(h5.attrs["num_experts"]))]


def test_recipes(tiny_config):
    ex = tiny_config()["experts"]  # schema defaults: recipe authors, no explicit hyperparameters
    assert X.resolve_recipe(ex) == {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 40.0,
                                    "augment": True, "batch": 4}
    mtt = X.resolve_recipe({**ex, "recipe": "mtt", "lr": 0.05, "batch": 8})
    assert mtt["lr"] == 0.05 and mtt["momentum"] == 0 and mtt["augment"] is False and mtt["batch"] == 8


def test_keeps_exactly_the_snapshots_asked_for(frames_file, settings, tmp_path):
    out = tmp_path / "experts.h5"
    s = settings(keep_epochs=2, dtype="float16")
    X.train_experts(frames_file, out, s)
    with h5py.File(out, "r") as h5:
        assert h5.attrs["keep_epochs"] == 2 and h5.attrs["num_experts"] == 2 and h5.attrs["epochs"] == 3
        assert len(h5.attrs["content_id"]) == 32
        n_params = int(h5.attrs["num_params"])
        for i in range(2):
            p = h5[f"expert_{i}/params"]
            assert p.shape == (3, n_params) and p.dtype == np.float16   # epochs 0, 1, 2 only
            assert 0 <= h5[f"expert_{i}"].attrs["test_top1"] <= 100
        shapes = h5["param_shapes"][:]
        assert int(sum(np.prod([d for d in row if d >= 0]) for row in shapes)) == n_params
    with Experts(out) as ex:
        a0, a1 = ex.snapshot(0, 0), ex.snapshot(0, 2)
        assert a0.shape == (n_params,) and not torch.equal(a0, a1)      # training moved the parameters
        assert not torch.equal(ex.snapshot(0, 0), ex.snapshot(1, 0))     # independent initialisations
        with pytest.raises(IndexError, match="keep_epochs"):
            ex.snapshot(0, 3)
    assert not ckpt_dir(s, out).exists()                                 # checkpoints removed after success


def test_resume_after_kill_matches_uninterrupted(frames_file, settings, tmp_path, kill_after):
    s = settings()                       # authors recipe: crops, flips and dropout draw from both RNGs
    X.train_experts(frames_file, tmp_path / "a.h5", s)

    saved = kill_after(4)                # one save per epoch: expert 0 done, expert 1 killed after epoch 1
    with pytest.raises(KeyboardInterrupt):
        X.train_experts(frames_file, tmp_path / "b.h5", s)
    assert not (tmp_path / "b.h5").exists()                              # no partial output
    assert saved[-1]["state"]["epoch"] == 1 and saved[2]["state"]["done"]
    assert sorted(p.name for p in ckpt_dir(s, tmp_path / "b.h5").iterdir()) == ["expert_0.pt", "expert_1.pt"]
    kill_after(None)
    X.train_experts(frames_file, tmp_path / "b.h5", s)
    for a, b in zip(params(tmp_path / "a.h5"), params(tmp_path / "b.h5")):
        np.testing.assert_array_equal(a, b)
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        for i in range(2):
            assert dict(a[f"expert_{i}"].attrs) == dict(b[f"expert_{i}"].attrs)   # test top-1, losses, seed
    assert not ckpt_dir(s, tmp_path / "b.h5").exists()


def test_changed_settings_never_resume_an_old_checkpoint(frames_file, settings, tmp_path, kill_after):
    old, new = settings(recipe="mtt"), settings(recipe="mtt", lr=0.05)
    X.train_experts(frames_file, tmp_path / "fresh.h5", new)
    kill_after(4)
    with pytest.raises(KeyboardInterrupt):
        X.train_experts(frames_file, tmp_path / "run.h5", old)
    kill_after(None)
    X.train_experts(frames_file, tmp_path / "run.h5", new)                # same job, other settings
    for a, b in zip(params(tmp_path / "fresh.h5"), params(tmp_path / "run.h5")):
        np.testing.assert_array_equal(a, b)


class Payload:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_a_pickled_object_and_a_truncated_checkpoint(frames_file, settings, tmp_path, kill_after):
    s = settings(num_experts=1, recipe="mtt")
    X.train_experts(frames_file, tmp_path / "fresh.h5", s)
    folder = ckpt_dir(s, tmp_path / "run.h5")
    folder.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"identity": "x", "state": Payload(marker)}, folder / "expert_0.pt")
    torch.load(folder / "expert_0.pt", weights_only=False)               # the payload is real: an unsafe
    assert marker.exists()                                               # load runs it
    marker.unlink()
    X.train_experts(frames_file, tmp_path / "run.h5", s)
    assert not marker.exists()                                           # never executed
    assert (folder / "expert_0.pt.corrupt").exists()                     # moved aside
    np.testing.assert_array_equal(params(tmp_path / "fresh.h5")[0], params(tmp_path / "run.h5")[0])

    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        X.train_experts(frames_file, tmp_path / "run2.h5", s)
    kill_after(None)
    ck = ckpt_dir(s, tmp_path / "run2.h5") / "expert_0.pt"
    ck.write_bytes(ck.read_bytes()[:ck.stat().st_size // 2])             # truncated, as a full disk leaves it
    X.train_experts(frames_file, tmp_path / "run2.h5", s)
    assert ck.with_name("expert_0.pt.corrupt").exists()
    np.testing.assert_array_equal(params(tmp_path / "fresh.h5")[0], params(tmp_path / "run2.h5")[0])


def test_nan_training_loss_stops_the_job(frames_file, settings, tmp_path):
    with pytest.raises(NonFiniteError, match=r"experts tiny \(expert 0\): the training loss is nan"):
        X.train_experts(frames_file, tmp_path / "e.h5", settings(num_experts=1, recipe="mtt", lr=1e6))
    assert not (tmp_path / "e.h5").exists()
