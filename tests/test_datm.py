"""DATM: exact bounded-memory gradient (with the inner-loop crop + flip), memory growth, schedule, the
reference's initialisation and labels (the fully trained expert; clips expert 0 classifies correctly),
and the job end to end from the per-expert files through the resume protocol (kill, changed experts,
truncated checkpoint, clean-up) at tiny CPU sizes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vdc.condense.base import Context
from vdc.condense.datm import start_epoch_upper
from vdc.condense.stage import run_condense
from vdc.condense.trajectory import FlatModel, InnerLoop, SavedTensorMeter, crop_view, match, plan_steps
from vdc.config import stage_settings
from vdc.data import clips as C
from vdc.data.frames import write_frames
from vdc.errors import NonFiniteError
from vdc.formats.experts import Experts, expert_path
from vdc.models import create_model
from vdc.resume import job_dir
from vdc.train.experts import index_experts, train_expert

WIDTH, SIZE = 0.0625, 48


def _problem(steps, seed=0, t_c=6, clip_len=4, n_syn=6, k=3, batch_syn=4, sampling="sliding", interp="none",
             augment="crop_flip"):
    torch.manual_seed(seed)
    model = create_model("minic3d_in", k, width=WIDTH).double()
    fm = FlatModel(model)
    theta0 = fm.flatten([p.detach() for p in model.parameters()])
    target = theta0 + 0.01 * torch.randn_like(theta0)
    clips = torch.randn(n_syn, 3, t_c, SIZE, SIZE, dtype=torch.float64)
    labels = torch.randn(n_syn, k, dtype=torch.float64)
    alpha = torch.tensor(0.05, dtype=torch.float64)
    plans = plan_steps(n_syn, steps, batch_syn, t_c, clip_len, sampling, augment, torch.Generator().manual_seed(seed),
                       size=SIZE)
    return InnerLoop(fm, clip_len, interp), theta0, target, clips, labels, alpha, plans


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


@pytest.mark.parametrize("sampling,t_c,interp,augment", [("sliding", 6, "none", "crop_flip"),
                                                          ("segment", 8, "none", "crop_flip"),
                                                          ("naive", 2, "dup", "crop_flip"),
                                                          ("sliding", 6, "none", "flip")])
def test_recompute_gradient_equals_naive(sampling, t_c, interp, augment):
    inner, th0, tgt, x, y, a, plans = _problem(4, t_c=t_c, sampling=sampling, interp=interp, augment=augment)
    assert all((p.boxes is not None) == (augment == "crop_flip") for p in plans)
    assert any(p.flip.any() for p in plans)
    n = match(inner, th0, tgt, x, y, a, plans, "naive")
    r = match(inner, th0, tgt, x, y, a, plans, "recompute")
    assert abs(n.loss - r.loss) <= 1e-12 * abs(n.loss)
    for g in ("grad_clips", "grad_labels", "grad_alpha"):
        assert getattr(n, g).abs().sum() > 0
        assert _rel(getattr(r, g), getattr(n, g)) < 1e-5, g


def test_inner_crop_is_the_experts_crop_and_differentiable():
    """The inner loop's crop + flip equals vdc.data.clips.crop_resize (the experts' random resized crop) on
    the same boxes and flips, and is differentiable in the clip (float64 gradcheck)."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(4, 3, 2, 20, 20, generator=g, dtype=torch.float64)
    boxes = C.sample_resized_crop_boxes(4, 20, 20, generator=g)
    flip = torch.tensor([False, True, False, True])
    assert not torch.equal(boxes[0], torch.tensor([0.0, 0.0, 20.0, 20.0]))
    ref = C.crop_resize(v.float().permute(0, 2, 3, 4, 1), boxes, 20, flip)
    torch.testing.assert_close(crop_view(v, boxes, flip).float(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(crop_view(v, torch.tensor([[0.0, 0.0, 20, 20]] * 4), None), v)   # whole frame: identity
    vs = v[:2, :, :1, :6, :6].clone().requires_grad_(True)
    b = C.sample_resized_crop_boxes(2, 6, 6, generator=g)
    assert torch.autograd.gradcheck(lambda t: crop_view(t, b, flip[:2]), (vs,))
    assert torch.autograd.gradgradcheck(lambda t: crop_view(t, b, flip[:2]).pow(2), (vs,))


def test_plans_draw_the_same_minibatches_in_every_augmentation_and_never_flip_when_off():
    plans = {aug: plan_steps(6, 5, 4, 6, 4, "sliding", aug, torch.Generator().manual_seed(3), size=SIZE)
             for aug in ("crop_flip", "flip", "none")}
    off = plan_steps(6, 5, 4, 6, 4, "sliding", "crop_flip", torch.Generator().manual_seed(3), size=SIZE, flip=False)
    for k in range(5):
        cf, fl, no, of = plans["crop_flip"][k], plans["flip"][k], plans["none"][k], off[k]
        for p in (fl, no, of):
            assert torch.equal(p.index, cf.index) and torch.equal(p.frames, cf.frames)
        assert torch.equal(fl.flip, cf.flip) and fl.boxes is None and not no.flip.any() and no.boxes is None
        assert torch.equal(of.boxes, cf.boxes) and not of.flip.any()                # flip mode off: never
    assert any(p.flip.any() for p in plans["crop_flip"])


def test_mirrored_clips_take_the_paired_classes_logits_and_the_gradient_stays_exact():
    """hflip map: a mirrored synthetic clip's targets are its logits with the paired columns swapped."""
    inner, th0, tgt, x, y, a, plans = _problem(3)
    pairs = InnerLoop(inner.fmodel, inner.clip_len, inner.interpolation, torch.tensor([1, 0, 2]))
    mirrored = [p for p in plans if p.flip.any() and not p.flip.all()][0]
    xb, yb = x[mirrored.index], y[mirrored.index]
    swapped = torch.where(mirrored.flip.unsqueeze(1), yb[:, [1, 0, 2]], yb)
    assert pairs.batch_loss(th0, xb, yb, mirrored) == inner.batch_loss(th0, xb, swapped, mirrored)
    assert pairs.batch_loss(th0, xb, yb, mirrored) != inner.batch_loss(th0, xb, yb, mirrored)
    n = match(pairs, th0, tgt, x, y, a, plans, "naive")
    r = match(pairs, th0, tgt, x, y, a, plans, "recompute")
    for g in ("grad_clips", "grad_labels", "grad_alpha"):
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
EXPERTS = {"epochs": 5, "keep_epochs": 3, "recipe": "mtt"}   # stores epochs 0..3 and 5 (the trained experts)


def experts_by_jobs(frames, index, settings):
    """The workflow's way: one job per expert (given the settings without num_experts), then the index."""
    job = {**settings, "experts": {k: v for k, v in settings["experts"].items() if k != "num_experts"}}
    files = [expert_path(index, i) for i in range(settings["experts"]["num_experts"])]
    for i, f in enumerate(files):
        train_expert(frames, f, job, i)
    index_experts(files, index, settings)


@pytest.fixture()
def job(tiny_config, frames_file, tmp_path):
    """job(name, **datm) -> (run() -> the CondensedSet run_condense writes to <tmp>/<name>.h5, the job's
    checkpoint folder); ``job.experts``: the experts index of the tiny config (2 experts x 5 epochs, mtt),
    trained by one job per expert once per test; ``job.config``: that config."""
    cfg = tiny_config(experts=EXPERTS, methods={"datm": DATM})
    experts = tmp_path / "experts.h5"
    experts_by_jobs(frames_file, experts, stage_settings(cfg, "experts", "tiny"))

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
    assert set(full.history) == {"loss", "alpha", "start_epoch", "upper", "expert", "skipped"}
    for k in full.history:                                         # written to the set's /history
        np.testing.assert_array_equal(resumed.history[k], full.history[k])


def test_changed_experts_file_never_resumes_an_old_checkpoint(job, frames_file, tmp_path, kill_after):
    run, folder = job("run")
    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        run()
    kill_after(None)
    old = job("old")[0]()
    # the experts stage reran (other seed) and rewrote the file the killed job read
    experts_by_jobs(frames_file, job.experts, stage_settings(
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


def _context(cfg, frames, experts, tmp_path, seed=0, ipc=2, **datm):
    c = copy.deepcopy(cfg)
    c["methods"]["datm"].update(datm)
    st = stage_settings(c, "condense", "tiny", method="datm", ipc=ipc, seed=seed)
    return Context(frames_path=frames, ipc=ipc, seed=seed, settings=st["settings"], stage=st,
                   device=torch.device("cpu"), workdir=tmp_path / "w", experts_path=experts)


@pytest.mark.parametrize("init", ["expert0_correct", "most_experts"])
def test_initial_clips_and_labels_come_from_the_fully_trained_experts(job, frames_file, tmp_path, init):
    """DATM Label_Model_Timestamp = -1: the final snapshot (epoch 5, stored beyond keep_epochs 3) picks the
    clips and its mean logits over the experts that classify a clip correctly are the clip's labels."""
    from vdc.condense.datm import _initialise, network_view

    ctx = _context(job.config, frames_file, job.experts, tmp_path, init=init)
    with Experts(job.experts) as ex:
        assert ex.stored_epochs == [0, 1, 2, 3, 5]
        fm = FlatModel(create_model(ex.arch, ex.num_classes, **ex.model))
        clips, logits, sources, _ = _initialise(ctx, ex, fm, ctx.settings)
        assert clips.shape == (6, 3, 6, SIZE, SIZE) and logits.shape == (6, 3)
        classes = torch.arange(3).repeat_interleave(2)
        assert (ctx.frames.labels[sources] == classes.numpy()).all()          # each clip from a video of its class
        with torch.no_grad():
            per_epoch = {epoch: torch.stack([fm(ex.snapshot(e, epoch), network_view(clips, 8, "none"))
                                             for e in range(ex.num_experts)]) for epoch in (3, 5)}   # [E, N, K]
    for i, c in enumerate(classes):
        for epoch, lg in per_epoch.items():
            ok = lg[:, i].argmax(1) == c
            want = lg[ok, i].mean(0) if ok.any() else lg[:, i].mean(0)
            if epoch == 5:
                torch.testing.assert_close(logits[i], want)
            else:
                assert not torch.allclose(logits[i], want)                        # not the window's end


def _split_brightness_frames(path, classes=3, clean=4, odd=3, seed=0):
    """Per class ``clean`` training videos with the class's brightness and ``odd`` with the next class's:
    a trained expert classifies exactly the clean ones correctly."""
    rng = np.random.default_rng(seed)
    videos, labels, splits = [], [], []
    for c in range(classes):
        for k in range(clean + odd):
            shade = c if k < clean else (c + 1) % classes
            videos.append(rng.integers(0, 40, (12, 52, 56, 3)).astype(np.uint8) + np.uint8(90 * shade))
            labels.append(c), splits.append(0)
        videos.append(rng.integers(0, 40, (12, 52, 56, 3)).astype(np.uint8) + np.uint8(90 * c))
        labels.append(c), splits.append(1)
    write_frames(path, videos, labels, splits, [f"class{c}" for c in range(classes)])
    return path


class ShadeExperts:
    """Stand-in experts for the initialisation rules on _split_brightness_frames: expert ``theta[0]`` = 0
    predicts a clip's shade (right on the clean videos only), 1 predicts shade - 1 (right on the odd
    ones only), 2 always predicts class 0."""

    def __call__(self, theta, x):
        pixel = C.denormalize(x).mean((1, 2, 3, 4)) * 255
        shade = ((pixel - 19.5) / 90).round().long().clamp(0, 2)
        pred = {0: shade, 1: (shade - 1) % 3, 2: torch.zeros_like(shade)}[int(theta[0])]
        return torch.nn.functional.one_hot(pred, 3).float()


def test_expert0_correct_picks_random_clips_that_expert_0_classifies_correctly(tiny_config, tmp_path):
    """DATM.py 205-236: random real clips of the class that expert 0 classifies correctly (seeded); when it
    finds fewer than IPC, the next experts' correct clips; most_experts instead takes the majority's."""
    from vdc.condense.datm import _pick_expert0_correct, _pick_most_experts

    frames = _split_brightness_frames(tmp_path / "frames.h5")
    cfg = tiny_config(methods={"datm": DATM})
    fm, experts = ShadeExperts(), {k: torch.tensor([float(k)]) for k in range(3)}

    def picks(rule, order, seed=0, ipc=2):
        ctx = _context(cfg, frames, None, tmp_path, seed=seed, ipc=ipc)
        out = [rule(ctx, fm, [experts[k] for k in order], c) for c in range(3)]
        for c, (x, v) in enumerate(out):
            assert len(v) == ipc and (ctx.frames.labels[ctx.train_bank.ids[v]] == c).all()
        return np.stack([ctx.train_bank.ids[v].numpy() % 7 for _, v in out])    # [class, IPC]: 0-3 clean, 4-6 odd

    runs = [picks(_pick_expert0_correct, [0, 1]) for _ in range(2)] + [picks(_pick_expert0_correct, [0, 1], seed=s)
                                                                      for s in (1, 2, 3)]
    assert all((r < 4).all() for r in runs)                                   # only clips expert 0 gets right
    np.testing.assert_array_equal(runs[0], runs[1])                           # seeded
    assert len({r.tobytes() for r in runs}) > 1                               # random among them
    assert (picks(_pick_expert0_correct, [1, 0, 0]) >= 4).all()               # expert 0 decides, not the majority
    assert (picks(_pick_most_experts, [1, 0, 0]) < 4).all()                   # (vdc's most_experts rule)
    assert (picks(_pick_expert0_correct, [2, 0])[1:] < 4).all()               # expert 0 finds none (c > 0): expert 1's
    fill = picks(_pick_expert0_correct, [0, 2], ipc=6)                        # classes 1, 2: the 4 clean, then 2 more
    assert (np.sort(fill[1:, :4]) == [0, 1, 2, 3]).all() and (fill[1:, 4:] >= 4).all()


@pytest.mark.parametrize("mode", ["off", "on", "map"])
def test_inner_loop_flips_as_the_dataset_says(tiny_config, frames_file, tmp_path, monkeypatch, mode):
    """datasets.<name>.hflip off: no inner step ever mirrors a clip; on: some do, labels kept; map: the
    label map of hflip_pairs reaches the inner loop."""
    import vdc.condense.datm as D

    plans, loops = [], []

    def spy_plans(*args, **kwargs):
        plans.extend(made := real_plans(*args, **kwargs))
        return made

    def spy_inner(*args):
        loops.append(made := real_inner(*args))
        return made
    real_plans, real_inner = D.plan_steps, D.InnerLoop
    monkeypatch.setattr(D, "plan_steps", spy_plans)
    monkeypatch.setattr(D, "InnerLoop", spy_inner)
    ds = {"hflip": mode, "hflip_pairs": [["class0", 2]] if mode == "map" else []}
    cfg = tiny_config(experts=EXPERTS, methods={"datm": DATM}, datasets={"tiny": ds})
    experts_by_jobs(frames_file, tmp_path / "experts.h5", stage_settings(cfg, "experts", "tiny"))
    st = stage_settings(cfg, "condense", "tiny", method="datm", ipc=2, seed=0)
    run_condense(frames_file, tmp_path / "set.h5", st, experts_path=tmp_path / "experts.h5")
    flipped = torch.cat([p.flip for p in plans])
    assert len(plans) == 6 * 2 and all(p.boxes is not None for p in plans)
    assert (not flipped.any()) if mode == "off" else flipped.any()
    label_map = loops[0].label_map
    assert (label_map is None) if mode != "map" else label_map.tolist() == [2, 1, 0]
