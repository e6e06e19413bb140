"""DATM: exact bounded-memory gradient, memory growth, schedule, and the job end to end through the
resume protocol (kill, changed experts file, truncated checkpoint, clean-up) at tiny CPU sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vdc.condense.base import Context
from vdc.condense.datm import start_epoch_upper
from vdc.condense.stage import run_condense
from vdc.condense.trajectory import FlatModel, InnerLoop, SavedTensorMeter, match, plan_steps
from vdc.config import stage_settings
from vdc.errors import NonFiniteError
from vdc.formats.experts import Experts
from vdc.models import create_model
from vdc.resume import job_dir
from vdc.train.experts import train_experts

WIDTH, SIZE = 0.0625, 48


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
EXPERTS = {"epochs": 3, "recipe": "mtt"}


@pytest.fixture()
def job(tiny_config, frames_file, tmp_path):
    """job(name, **datm) -> (run() -> the CondensedSet run_condense writes to <tmp>/<name>.h5, the job's
    checkpoint folder); ``job.experts``: the experts file of the tiny config (3 epochs, mtt), trained
    once per test; ``job.config``: that config."""
    cfg = tiny_config(experts=EXPERTS, methods={"datm": DATM})
    experts = tmp_path / "experts.h5"
    train_experts(frames_file, experts, stage_settings(cfg, "experts", "tiny"))

    def make(name, experts_path=experts, **over):
        c = tiny_config(experts=EXPERTS, methods={"datm": {**DATM, **over}})
        st = stage_settings(c, "condense", "tiny", method="datm", ipc=2, seed=0)
        out = tmp_path / f"{name}.h5"

        def run():
            return run_condense(frames_file, out, st, experts_path=experts_path)
        return run, job_dir(st["workdir"], "condense", out)
    make.experts = experts
    make.config = cfg
    return make


def test_condense_output(job, tmp_path):
    run, folder = job("set")
    cs = run()
    assert cs.clips.shape == (6, 6, SIZE, SIZE, 3) and cs.clips.dtype == np.float32
    assert list(cs.labels) == [0, 0, 1, 1, 2, 2]
    assert cs.label_logits.shape == (6, 3) and np.isfinite(cs.label_logits).all()
    brightness = cs.clips.reshape(3, -1).mean(1)                   # denormalised to [0, 1] pixel space:
    assert brightness[0] < brightness[1] < brightness[2]            # the tiny classes differ in brightness
    assert cs.attrs["method"] == "datm" and cs.attrs["t_c"] == 6 and cs.attrs["iterations"] == 6
    assert cs.attrs["alpha"] != pytest.approx(0.01, abs=0)        # the step size was learned
    assert (cs.source_video >= 0).all()
    assert (tmp_path / "set.h5").exists() and not folder.exists()  # no checkpoint or history left behind


def test_killed_run_resumes_to_the_same_set(job, kill_after):
    full = job("full")[0]()
    run, folder = job("resumed")
    saved = kill_after(2)                                          # checkpoints after iterations 1 and 3
    with pytest.raises(KeyboardInterrupt):
        run()
    assert saved[-1]["iteration"] == 4 and (folder / "datm.pt").exists()
    kill_after(None)
    resumed = run()
    np.testing.assert_array_equal(full.clips, resumed.clips)
    np.testing.assert_array_equal(full.label_logits, resumed.label_logits)
    assert full.attrs["alpha"] == resumed.attrs["alpha"] and full.attrs["skipped"] == resumed.attrs["skipped"]
    assert not folder.exists()


def test_changed_experts_file_never_resumes_an_old_checkpoint(job, frames_file, tmp_path, kill_after):
    run, folder = job("run")
    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        run()
    kill_after(None)
    old = job("old")[0]()
    # the experts stage reran (other seed) and rewrote the file the killed job read
    train_experts(frames_file, job.experts, stage_settings(
        job.config | {"experts": {**job.config["experts"], "seed": 1}}, "experts", "tiny"))
    after = run()
    fresh = job("fresh")[0]()
    np.testing.assert_array_equal(after.clips, fresh.clips)
    np.testing.assert_array_equal(after.label_logits, fresh.label_logits)
    assert not np.array_equal(after.clips, old.clips)


def test_truncated_checkpoint_is_moved_aside_and_the_job_starts_over(job, kill_after):
    full = job("full")[0]()
    run, folder = job("run")
    kill_after(1)
    with pytest.raises(KeyboardInterrupt):
        run()
    kill_after(None)
    ck = folder / "datm.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    again = run()
    assert (folder / "datm.pt.corrupt").exists() and not ck.exists()
    np.testing.assert_array_equal(full.clips, again.clips)


def test_diverging_matching_loss_stops_the_job(job, tmp_path):
    run, _ = job("nan", lr_teacher=1e12)
    with pytest.raises(NonFiniteError, match=r"condense tiny/datm ipc2 tc6-sliding-none seed0: DATM's matching loss"):
        run()
    assert not (tmp_path / "nan.h5").exists()


def test_initial_labels_are_mean_logits_of_correct_experts(job, frames_file, tmp_path):
    from vdc.condense.datm import _initialise, network_view

    st = stage_settings(job.config, "condense", "tiny", method="datm", ipc=2, seed=0)
    ctx = Context(frames_path=frames_file, ipc=2, seed=0, settings=st["settings"], stage=st,
                  device=torch.device("cpu"), workdir=tmp_path / "w", experts_path=job.experts)
    with Experts(job.experts) as ex:
        fm = FlatModel(create_model(ex.arch, ex.num_classes, **ex.model))
        clips, logits, sources, _ = _initialise(ctx, ex, fm, ctx.settings)
        assert clips.shape == (6, 3, 6, SIZE, SIZE) and logits.shape == (6, 3)
        classes = torch.arange(3).repeat_interleave(2)
        assert (ctx.frames.labels[sources] == classes.numpy()).all()          # each clip from a video of its class
        with torch.no_grad():
            per_expert = torch.stack([fm(ex.snapshot(e, ctx.settings["max_start_epoch"]), network_view(clips, 8, "none"))
                                      for e in range(ex.num_experts)])          # [E, N, K]
    for i, c in enumerate(classes):
        ok = per_expert[:, i].argmax(1) == c
        want = per_expert[ok, i].mean(0) if ok.any() else per_expert[:, i].mean(0)
        torch.testing.assert_close(logits[i], want)
