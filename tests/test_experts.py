"""Expert trajectories: stored snapshots, file layout, resume after a kill (tiny CPU sizes)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from vdc.data.frames import write_frames
from vdc.train import experts as X

torch.set_num_threads(1)

WIDTH = 0.0625
SIZE = 48  # MiniC3D needs >= 43 px: three stride-2 convolutions and three pools


def make_frames(path, classes=3, train=4, test=2, frames=12, size=52, seed=0):
    """A tiny frames file: each class a distinct mean colour plus noise."""
    rng = np.random.default_rng(seed)
    videos, labels, splits = [], [], []
    for c in range(classes):
        for split, n in ((0, train), (1, test)):
            for _ in range(n):
                base = np.zeros((frames, size, size, 3), np.float32)
                base[..., c % 3] = 160
                v = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                videos.append(v)
                labels.append(c)
                splits.append(split)
    write_frames(path, videos, labels, splits, [f"class{c}" for c in range(classes)])
    return path


def expert_settings(workdir, **ex):
    e = {"arch": "minic3d_in", "num_experts": 2, "epochs": 3, "recipe": "authors", "batch": 4,
         "dtype": "float32", "seed": 0, "threads": 1}
    e.update(ex)
    return {"arch": "minic3d_in", "model": {"width": WIDTH, "dropout": 0.5}, "experts": e,
            "dataset": {"name": "tiny", "input_size": SIZE, "clip_len": 4, "clip_interval": 2},
            "device": "cpu", "deterministic": True, "workdir": str(workdir)}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return make_frames(tmp_path_factory.mktemp("frames") / "tiny.h5")


def test_recipes():
    assert X.resolve_recipe({"recipe": "authors"}) == {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4,
                                                       "grad_clip": 40.0, "augment": True, "batch": 16}
    mtt = X.resolve_recipe({"recipe": "mtt", "lr": 0.05, "batch": 8})
    assert mtt["lr"] == 0.05 and mtt["momentum"] == 0 and mtt["augment"] is False and mtt["batch"] == 8


def test_keeps_exactly_the_snapshots_asked_for(frames, tmp_path):
    out = tmp_path / "experts.h5"
    s = expert_settings(tmp_path / "work", keep_epochs=2, dtype="float16")
    X.train_experts(frames, out, s)
    with h5py.File(out, "r") as h5:
        assert h5.attrs["keep_epochs"] == 2 and h5.attrs["num_experts"] == 2 and h5.attrs["epochs"] == 3
        n_params = int(h5.attrs["num_params"])
        for i in range(2):
            p = h5[f"expert_{i}/params"]
            assert p.shape == (3, n_params) and p.dtype == np.float16   # epochs 0, 1, 2 only
            assert 0 <= h5[f"expert_{i}"].attrs["test_top1"] <= 100
        shapes = h5["param_shapes"][:]
        assert int(sum(np.prod([d for d in row if d >= 0]) for row in shapes)) == n_params
    ex = X.Experts(out)
    a0, a1 = ex.snapshot(0, 0), ex.snapshot(0, 2)
    assert a0.shape == (n_params,) and not torch.equal(a0, a1)      # training moved the parameters
    assert not torch.equal(ex.snapshot(0, 0), ex.snapshot(1, 0))     # independent initialisations
    with pytest.raises(IndexError, match="keep_epochs"):
        ex.snapshot(0, 3)
    ex.close()


def test_resume_after_kill_matches_uninterrupted(frames, tmp_path, monkeypatch):
    s = expert_settings(tmp_path / "a", num_experts=1, recipe="mtt")
    X.train_experts(frames, tmp_path / "a.h5", s)

    # kill during epoch 2 (the third test-pass or batch never happens), then resume
    s2 = expert_settings(tmp_path / "b", num_experts=1, recipe="mtt")
    calls = {"n": 0}
    real = X._clip_batch

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 batches per epoch: dies in the second epoch
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(X, "_clip_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        X.train_experts(frames, tmp_path / "b.h5", s2)
    assert not (tmp_path / "b.h5").exists()                         # no partial output
    assert torch.load(tmp_path / "b/experts/tiny/expert_0.pt", weights_only=False)["state"]["epoch"] == 1
    monkeypatch.setattr(X, "_clip_batch", real)
    X.train_experts(frames, tmp_path / "b.h5", s2)
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        np.testing.assert_array_equal(a["expert_0/params"][:], b["expert_0/params"][:])
        assert a["expert_0"].attrs["test_top1"] == b["expert_0"].attrs["test_top1"]
