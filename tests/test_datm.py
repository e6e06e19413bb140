"""DATM: exact bounded-memory gradient, memory growth, schedule, resume, output (tiny CPU sizes)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vdc.condense.base import Context
from vdc.condense.datm import distill, start_epoch_upper
from vdc.condense.trajectory import FlatModel, InnerLoop, SavedTensorMeter, match, plan_steps
from vdc.config import load_schema
from vdc.models import create_model
from vdc.train import experts as X

from test_experts import SIZE, WIDTH, expert_settings, make_frames

torch.set_num_threads(1)


def _problem(steps, seed=0, t_c=6, clip_len=4, n_syn=6, k=3, batch_syn=4, sampling="sliding", interp="none"):
    torch.manual_seed(seed)
    model = create_model("minic3d_in", k, width=WIDTH).double()
    fm = FlatModel(model)
    theta0 = fm.flatten([p.detach() for p in model.parameters()])
    target = theta0 + 0.01 * torch.randn_like(theta0)
    clips = torch.randn(n_syn, 3, t_c, SIZE, SIZE, dtype=torch.float64)
    labels = torch.randn(n_syn, k, dtype=torch.float64)
    alpha = torch.tensor(0.05, dtype=torch.float64)
    plans = plan_steps(n_syn, steps, batch_syn, t_c, clip_len, sampling, True, torch.Generator().manual_seed(seed))
    return InnerLoop(fm, clip_len, interp), theta0, target, clips, labels, alpha, plans


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


@pytest.mark.parametrize("sampling,t_c,interp", [("sliding", 6, "none"), ("segment", 8, "none"), ("naive", 2, "dup")])
def test_recompute_gradient_equals_naive(sampling, t_c, interp):
    inner, th0, tgt, x, y, a, plans = _problem(4, t_c=t_c, sampling=sampling, interp=interp)
    n = match(inner, th0, tgt, x, y, a, plans, "naive")
    r = match(inner, th0, tgt, x, y, a, plans, "recompute")
    assert abs(n.loss - r.loss) <= 1e-12 * abs(n.loss)
    for g in ("grad_clips", "grad_labels", "grad_alpha"):
        assert getattr(n, g).abs().sum() > 0
        assert _rel(getattr(r, g), getattr(n, g)) < 1e-5, g


def test_gradient_matches_finite_difference_in_alpha():
    inner, th0, tgt, x, y, a, plans = _problem(3)
    r = match(inner, th0, tgt, x, y, a, plans, "recompute")
    h = 1e-6
    up = match(inner, th0, tgt, x, y, a + h, plans, "recompute").loss
    dn = match(inner, th0, tgt, x, y, a - h, plans, "recompute").loss
    assert abs((up - dn) / (2 * h) - float(r.grad_alpha)) < 1e-5 * max(1.0, abs(float(r.grad_alpha)))


def test_saved_bytes_flat_in_recompute_linear_in_naive():
    peaks = {}
    for mode in ("naive", "recompute"):
        for steps in (2, 4, 8):
            inner, th0, tgt, x, y, a, plans = _problem(steps)
            with SavedTensorMeter() as m:
                match(inner, th0, tgt, x, y, a, plans, mode)
            peaks[mode, steps] = m.peak
    assert peaks["recompute", 8] == peaks["recompute", 2]
    d1 = peaks["naive", 4] - peaks["naive", 2]
    d2 = peaks["naive", 8] - peaks["naive", 4]
    assert d1 > 0 and abs(d2 - 2 * d1) <= 0.05 * d2      # linear in the number of steps
    assert peaks["naive", 8] > 3 * peaks["recompute", 8]


def test_start_epoch_window_schedule():
    s = {"min_start_epoch": 0, "current_max_start_epoch": 10, "max_start_epoch": 20, "expansion_end_epoch": 2000}
    assert [start_epoch_upper(it, s) for it in (0, 199, 200, 1000, 1999, 2000, 5000)] == [10, 10, 11, 15, 19, 20, 20]
    assert start_epoch_upper(0, {**s, "expansion_end_epoch": 0}) == 20


# ----------------------------------------------------------------------------- end to end

DATM = {"iterations": 6, "syn_steps": 2, "expert_epochs": 1, "min_start_epoch": 0, "current_max_start_epoch": 1,
        "max_start_epoch": 2, "expansion_end_epoch": 4, "batch_syn": 3, "checkpoint_every": 2,
        "temporal": "tc6-sliding-none", "lr_clips": 100.0, "lr_labels": 5.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("datm")
    frames = make_frames(d / "tiny.h5")
    experts = d / "experts.h5"
    X.train_experts(frames, experts, expert_settings(d / "work", epochs=3, recipe="mtt"))
    return frames, experts


def _settings(**over):
    schema = load_schema()["properties"]["methods"]["properties"]["datm"]["properties"]
    s = {k: copy.deepcopy(v["default"]) for k, v in schema.items() if "default" in v}
    s.update(DATM)
    s.update(over)
    return s


def _ctx(data, workdir, ipc=2, seed=0, **over):
    frames, experts = data
    stage = {"dataset": {"name": "tiny", "input_size": SIZE, "clip_len": 4, "clip_interval": 2},
             "method": "datm", "experts_model": {"width": WIDTH, "dropout": 0.5}}
    return Context(frames_path=frames, ipc=ipc, seed=seed, settings=_settings(**over), stage=stage,
                   device=torch.device("cpu"), workdir=workdir, experts_path=experts)


def test_condense_output(data, tmp_path):
    cs = distill(_ctx(data, tmp_path / "w"))
    assert cs.clips.shape == (6, 6, SIZE, SIZE, 3) and cs.clips.dtype == np.float32
    assert list(cs.labels) == [0, 0, 1, 1, 2, 2]
    assert cs.label_logits.shape == (6, 3) and np.isfinite(cs.label_logits).all()
    for i, c in enumerate(cs.labels):                             # denormalised to [0, 1] pixel space:
        means = cs.clips[i].mean(axis=(0, 1, 2))                  # class c's videos are bright in channel c
        assert means[c] > 0.45 and np.delete(means, c).max() < 0.25
    assert cs.attrs["method"] == "datm" and cs.attrs["t_c"] == 6 and cs.attrs["iterations"] == 6
    assert cs.attrs["alpha"] != pytest.approx(0.01, abs=0)        # the step size was learned
    assert (cs.source_video >= 0).all()
    cs.write(tmp_path / "set.h5")


def test_killed_run_resumes_to_the_same_set(data, tmp_path):
    full = distill(_ctx(data, tmp_path / "full"))

    def kill(it, rec):
        if it == 4:                                               # checkpoint was written after it 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(_ctx(data, tmp_path / "resumed"), on_iteration=kill)
    assert torch.load(tmp_path / "resumed/datm.pt", weights_only=False)["iteration"] == 4
    resumed = distill(_ctx(data, tmp_path / "resumed"))
    np.testing.assert_array_equal(full.clips, resumed.clips)
    np.testing.assert_array_equal(full.label_logits, resumed.label_logits)
    assert full.attrs["alpha"] == resumed.attrs["alpha"]


def test_initial_labels_are_mean_logits_of_correct_experts(data, tmp_path):
    from vdc.condense.datm import _initialise, network_view

    ctx = _ctx(data, tmp_path / "w", ipc=2)
    ex = X.Experts(data[1])
    fm = FlatModel(create_model(ex.arch, ex.num_classes, **ex.model))
    clips, logits, sources, _ = _initialise(ctx, ex, fm, ctx.settings)
    assert clips.shape == (6, 3, 6, SIZE, SIZE) and logits.shape == (6, 3)
    classes = torch.arange(3).repeat_interleave(2)
    assert (ctx.frames.labels[sources] == classes.numpy()).all()          # each clip from a video of its class
    with torch.no_grad():
        per_expert = torch.stack([fm(ex.snapshot(e, ctx.settings["max_start_epoch"]), network_view(clips, 4, "none"))
                                  for e in range(ex.num_experts)])          # [E, N, K]
    for i, c in enumerate(classes):
        ok = per_expert[:, i].argmax(1) == c
        want = per_expert[ok, i].mean(0) if ok.any() else per_expert[:, i].mean(0)
        torch.testing.assert_close(logits[i], want)
    ex.close()
