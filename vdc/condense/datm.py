"""DATM — difficulty-aligned trajectory matching (Guo et al., ICLR 2024) for video (study.md section 6).

Reference: the image method's code, NUS-HPC-AI-Lab/DATM at 97ae510 (GzyAftermath/DATM's README points
there), ``distill/DATM.py`` and ``utils/cfg.py``; no video DATM code was released.

Synthetic set. IPC videos per class of T_c frames (``ctx.temporal``) at the input size, optimised in
the network's normalised space (ImageNet mean/std) as float32 [N, 3, T_c, S, S]; the output is
denormalised to [0, 1] pixel space (unclipped) as [N, T_c, S, S, 3]. Each has learnable label
logits [N, K]; one learnable step size alpha (initial value ``lr_teacher``).

Initialisation (``init``; the experts at snapshot ``label_epoch``, null = the fully trained expert:
DATM ``Label_Model_Timestamp = -1``, ``utils/cfg.py`` 136, read at ``DATM.py`` 201 and 288). A candidate
clip is a T_c-frame window of a training video at the clip interval (``train_frame_indices`` with
clip_len = T_c), centre-cropped to the input size; an expert classifies its centre clip_len-frame window.

* ``expert0_correct`` (DATM ``pix_init = samples_predicted_correctly``, ``DATM.py`` 185-236): per class,
  the class's training videos in a random order (repeated, each copy a new window, when the class has
  fewer than IPC); the first IPC candidates in that order that expert 0 classifies correctly, scored in
  batches of 256 as the reference does. When expert 0 finds fewer than IPC, experts 1, 2, ... rescan the
  class in turn and add the clips they classify correctly (``DATM.py`` 218-225); when no expert finds
  IPC, the rest are the first unchosen candidates (the reference would loop forever).
* ``most_experts`` (vdc's earlier rule): per class up to ``init_candidates`` videos in random order;
  the IPC candidates that the most experts classify correctly (ties: the random order).

Label logits (``DATM.py`` 268-307): the mean logits, at snapshot ``label_epoch``, of every expert that
classifies the chosen clip correctly (of all experts when none does, where the reference divides by 0).

Iteration it (``iterations`` in all):
  U  = min(current_max_start_epoch + floor((max_start_epoch - current_max_start_epoch) * it / expansion_end_epoch),
           max_start_epoch)                                     (difficulty alignment; U = max when expansion_end = 0)
  s ~ U{min_start_epoch, ..., U-1}, expert e ~ U{0..E-1}; theta_0 = snapshot(e, s), theta* = snapshot(e, s + expert_epochs)
  syn_steps inner SGD steps of the student on minibatches of ``batch_syn`` synthetic clips, each
  seen through the temporal sampling (naive / segment / sliding windows of clip_len frames; dup /
  linear interpolation when T_c < clip_len) and the inner augmentation ``inner_augment`` (crop_flip:
  the experts' random resized crop, area ``inner_crop_scale``, + flip, differentiable; flip; none),
  soft cross-entropy against softmax(label logits);
  loss = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2
  (vdc/condense/trajectory.py, exact gradient in bounded memory with ``memory: recompute``, float32
  unless ``performance.datm_bf16``); clips: SGD(lr_clips, momentum 0.5), alpha: SGD(lr_lr, momentum 0.5),
  labels: SGD(lr_labels, momentum 0.9); no update when loss > threshold.

Horizontal flip (``datasets.<name>.hflip``: vdc.data.clips.HFlip, built once per run). The initial clips
are never mirrored (the reference takes the stored images as they are), so their labels need no mapping. In the inner
loop: ``off`` never mirrors a clip (whatever ``inner_augment`` says); ``on`` mirrors half of them, the
label logits unchanged (the experts saw mirrored clips with unchanged labels); ``map`` mirrors half of
them and a mirrored clip's targets are its label logits with the columns of each pair of mirrored
classes swapped, the same map the experts' training applied to real clips (a mirrored "left to right"
clip is a "right to left" one). The learned logits therefore stay those of the unmirrored clip, which is
what the evaluation's soft labels read and map again when it mirrors the clip.

Expert per iteration: uniform over the experts (the reference cycles through a shuffled list).

Checkpoint (``ctx.checkpoint("datm")``, vdc/resume.py; every ``checkpoint_every`` iterations):
synthetic clips, labels, alpha, the three optimiser states, the generator state and the per-iteration
history (loss, alpha, start epoch, window, expert, skipped); tied to the job's settings, the frames
file's and the experts index's contents (which change with any expert) and the code. A killed job
resumes there and ends with the same synthetic set as an uninterrupted run (CPU); the stage removes
the checkpoint once the set is written. Progress lines every ``log_every`` iterations (and at least
every 30 s). A non-finite matching loss or synthetic set stops the job with NonFiniteError; nothing is
written.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vdc.accel import Accel
from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.trajectory import FlatModel, InnerLoop, clip_view, match, plan_steps
from vdc.condensed import CondensedSet
from vdc.data import clips as C
from vdc.errors import ConfigError, InputError, NonFiniteError, check_finite
from vdc.formats.experts import Experts
from vdc.models import create_model
from vdc.progress import Progress
from vdc.resume import Checkpoint, rng_state, set_rng_state


def start_epoch_upper(it: int, s: dict) -> int:
    """Exclusive upper bound U of the start epoch at iteration ``it`` (difficulty alignment):
    grows linearly from current_max_start_epoch to max_start_epoch over expansion_end_epoch iterations."""
    lo, hi, end = int(s["current_max_start_epoch"]), int(s["max_start_epoch"]), int(s["expansion_end_epoch"])
    if end <= 0:
        return hi
    return min(lo + int((hi - lo) * it / end), hi)


def sample_start_epoch(it: int, s: dict, generator: torch.Generator) -> tuple[int, int]:
    """(start epoch s ~ U[min_start_epoch, U), U)."""
    upper = start_epoch_upper(it, s)
    lo = int(s["min_start_epoch"])
    return int(torch.randint(lo, max(upper, lo + 1), (1,), generator=generator)), upper


def network_view(x: torch.Tensor, clip_len: int, interpolation: str) -> torch.Tensor:
    """The centre clip_len-frame window of videos x [B, 3, T_c, S, S] (interpolated to clip_len when
    T_c is shorter): what the experts classify at initialisation."""
    t_c = x.shape[2]
    start = max((t_c - clip_len) // 2, 0)
    fr = torch.arange(start, start + min(clip_len, t_c), device=x.device).expand(x.shape[0], -1)
    return clip_view(x, fr, None, clip_len, interpolation)


def open_experts(ctx: Context) -> Experts:
    """The experts file of the job, checked against the settings and the frames file."""
    if ctx.experts_path is None:
        raise ConfigError(f"{ctx.job}: DATM needs an experts file (methods.<name>.needs: [experts]); none was given")
    experts = Experts(ctx.experts_path)
    try:
        _check(ctx.settings, experts, ctx)
    except Exception:
        experts.close()
        raise
    return experts


def _check(s: dict, experts: Experts, ctx: Context) -> None:
    need = int(s["max_start_epoch"]) + int(s["expert_epochs"])
    if need > experts.keep_epochs:
        raise InputError(f"{experts.path}: DATM needs snapshots up to epoch max_start_epoch + expert_epochs = {need}, "
                         f"the file stores 0..{experts.keep_epochs}; raise experts.keep_epochs/epochs or lower max_start_epoch")
    if int(s["min_start_epoch"]) >= int(s["max_start_epoch"]):
        raise ConfigError("methods.datm: min_start_epoch must be below max_start_epoch")
    lab = label_epoch(s, experts)
    if lab not in experts.stored_epochs:
        raise InputError(f"{experts.path}: methods.datm.label_epoch {lab} is not stored (epochs 0..{experts.keep_epochs} "
                         f"and {experts.final_epoch}); set label_epoch: null (the fully trained expert) or an epoch "
                         f"the experts keep")
    if experts.num_classes != ctx.num_classes:
        raise InputError(f"{experts.path}: experts have {experts.num_classes} classes, {ctx.frames_path} has "
                         f"{ctx.num_classes}; rerun the experts stage for this dataset")
    model = ctx.stage["experts_model"]
    if model != experts.model:
        raise InputError(f"{experts.path}: experts were trained with model settings {experts.model}, the config "
                         f"now says {model}; rerun the experts stage")


def student(experts: Experts, device) -> FlatModel:
    """The experts' network as a function of a flat parameter vector."""
    fmodel = FlatModel(create_model(experts.arch, experts.num_classes, **experts.model).to(device))
    if fmodel.num_params != experts.num_params:
        raise InputError(f"{experts.path}: {experts.num_params} parameters per snapshot, {experts.arch} "
                         f"{experts.model} has {fmodel.num_params}; rerun the experts stage")
    return fmodel


INIT_BATCH = 256  # candidates expert 0 scores at a time (DATM.py 213)


def label_epoch(s: dict, experts: Experts) -> int:
    """The expert snapshot that picks and labels the initial clips: ``label_epoch``, null = the last."""
    return experts.final_epoch if s["label_epoch"] is None else int(s["label_epoch"])


def _candidates(ctx: Context, v: torch.Tensor) -> torch.Tensor:
    """Candidate clips of bank positions v: a random T_c-frame window at the clip interval, centre crop,
    normalised. -> [n, 3, T_c, S, S]."""
    bank, t = ctx.train_bank, ctx.temporal
    fi = C.train_frame_indices(bank.lengths[v], t.t_c, int(ctx.dataset["clip_interval"]), generator=ctx.generator)
    return C.normalize(C.center_crop(bank.gather(v, fi), ctx.input_size))


@torch.no_grad()
def _logits(ctx: Context, fmodel: FlatModel, thetas: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits [E, n, K] of each snapshot in ``thetas`` on the centre clip_len window of clips x."""
    view = network_view(x, ctx.clip_len, ctx.temporal.interpolation)
    return torch.stack([fmodel(th, view) for th in thetas])


def _class_videos(ctx: Context, c: int, limit: int | None) -> torch.Tensor:
    """Bank positions of class c's training videos in a random order (the first ``limit``), repeated up
    to IPC when the class has fewer (each copy gets its own window)."""
    pos = np.flatnonzero(ctx.train_bank.labels.cpu().numpy() == c)
    if len(pos) == 0:
        raise InputError(f"{ctx.frames_path}: class {c} has no training videos; DATM cannot initialise it")
    pos = ctx.rng.permutation(pos)[:limit]
    if len(pos) < ctx.ipc:
        pos = np.resize(pos, ctx.ipc)
    return torch.as_tensor(pos, device=ctx.device)


def _pick_expert0_correct(ctx: Context, fmodel: FlatModel, thetas: list[torch.Tensor], c: int):
    """(clips [IPC, ...], bank positions [IPC]) of class c by the reference's rule (module docstring)."""
    v = _class_videos(ctx, c, None)
    clips, chosen = [], []          # candidates scored so far; indices into them, in the order found
    for a in range(0, len(v), INIT_BATCH):
        x = _candidates(ctx, v[a:a + INIT_BATCH])
        ok = (_logits(ctx, fmodel, thetas[:1], x)[0].argmax(1) == c).nonzero().flatten().tolist()
        chosen += [a + j for j in ok][:ctx.ipc - len(chosen)]
        clips.append(x)
        if len(chosen) == ctx.ipc:
            break
    x = torch.cat(clips)
    for th in thetas[1:]:           # too few: the next experts rescan the class (DATM.py 218-225)
        if len(chosen) == ctx.ipc:
            break
        ok = (_logits(ctx, fmodel, [th], x)[0].argmax(1) == c).nonzero().flatten().tolist()
        chosen += [j for j in ok if j not in chosen][:ctx.ipc - len(chosen)]
    chosen += [j for j in range(len(x)) if j not in chosen][:ctx.ipc - len(chosen)]
    idx = torch.as_tensor(chosen, device=x.device)
    return x[idx], v[idx]


def _pick_most_experts(ctx: Context, fmodel: FlatModel, thetas: list[torch.Tensor], c: int):
    """(clips [IPC, ...], bank positions [IPC]): of ``init_candidates`` videos of class c in random order,
    the IPC that the most experts classify correctly (ties: the random order)."""
    v = _class_videos(ctx, c, int(ctx.settings["init_candidates"]))
    x = _candidates(ctx, v)
    ok = _logits(ctx, fmodel, thetas, x).argmax(2) == c                         # [E, n]
    order = torch.argsort(ok.sum(0), descending=True, stable=True)[:ctx.ipc]
    return x[order], v[order]


INIT_RULES = {"expert0_correct": _pick_expert0_correct, "most_experts": _pick_most_experts}


def _initialise(ctx: Context, experts: Experts, fmodel: FlatModel, s: dict):
    """(clips [N, 3, T_c, S, S] normalised, label logits [N, K], source video ids [N], fraction of
    (expert, clip) pairs classified correctly) — module docstring."""
    epoch = label_epoch(s, experts)
    thetas = [experts.snapshot(e, epoch, ctx.device) for e in range(experts.num_experts)]
    pick = INIT_RULES[s["init"]]
    clips, logits, sources, correct = [], [], [], []
    for c in range(ctx.num_classes):
        x, v = pick(ctx, fmodel, thetas, c)
        lg = _logits(ctx, fmodel, thetas, x)                                      # [E, IPC, K]
        ok = (lg.argmax(2) == c).to(lg.dtype)                                     # [E, IPC]
        n_ok = ok.sum(0)
        mean_ok = (lg * ok.unsqueeze(2)).sum(0) / n_ok.clamp(min=1).unsqueeze(1)
        logits.append(torch.where((n_ok > 0).unsqueeze(1), mean_ok, lg.mean(0)))
        clips.append(x)
        sources.append(ctx.train_bank.ids[v.cpu()])
        correct.append(float(ok.mean()))
    return torch.cat(clips), torch.cat(logits), torch.cat(sources).numpy(), float(np.mean(correct))


@dataclass
class Distillation:
    """What DATM optimises and what a checkpoint holds: the synthetic clips, their label logits and the
    step size alpha (leaves), their SGD optimisers, and the run's bookkeeping."""

    clips: torch.Tensor          # [N, 3, T_c, S, S] normalised
    labels: torch.Tensor         # [N, K] logits
    alpha: torch.Tensor          # 0-d
    opt_x: torch.optim.SGD
    opt_a: torch.optim.SGD
    opt_y: torch.optim.SGD
    sources: np.ndarray          # [N] real video each clip was initialised from
    init_acc: float              # fraction of the initial clips the experts classify correctly
    history: list[dict]          # one record per iteration done
    iteration: int = 0           # next iteration

    @classmethod
    def create(cls, s: dict, clips, labels, alpha, sources, init_acc, history, iteration) -> "Distillation":
        clips, labels, alpha = (v.detach().clone().requires_grad_(True) for v in (clips, labels, alpha))
        return cls(clips, labels, alpha,
                   torch.optim.SGD([clips], lr=float(s["lr_clips"]), momentum=float(s["momentum_clips"])),
                   torch.optim.SGD([alpha], lr=float(s["lr_lr"]), momentum=float(s["momentum_lr"])),
                   torch.optim.SGD([labels], lr=float(s["lr_labels"]), momentum=float(s["momentum_labels"])),
                   np.asarray(sources, np.int64), init_acc, history, iteration)

    def state(self, generator: torch.Generator) -> dict:
        return {"clips": self.clips.detach().cpu(), "labels": self.labels.detach().cpu(),
                "alpha": self.alpha.detach().cpu(), "opt_x": self.opt_x.state_dict(), "opt_a": self.opt_a.state_dict(),
                "opt_y": self.opt_y.state_dict(), "rng": rng_state(generator), "iteration": self.iteration,
                "history": self.history, "sources": torch.from_numpy(self.sources), "init_acc": self.init_acc}

    def check_finite(self, where: str) -> None:
        check_finite(self.clips.detach(), "DATM's synthetic clips", where)
        check_finite(self.labels.detach(), "DATM's label logits", where)
        check_finite(self.alpha.detach(), "DATM's step size alpha", where)


def start(ctx: Context, ckpt: Checkpoint, experts: Experts, fmodel: FlatModel) -> Distillation:
    """The run resumed from ``ckpt``, or a fresh one from the initial clips (module docstring)."""
    s, dev = ctx.settings, ctx.device
    saved = ckpt.load()
    if saved is None:
        clips, labels, sources, init_acc = _initialise(ctx, experts, fmodel, s)
        ctx.log.info("DATM: %d synthetic videos initialised; experts classify %.1f%% of them correctly",
                     len(clips), 100 * init_acc)
        return Distillation.create(s, clips, labels, torch.tensor(float(s["lr_teacher"]), device=dev), sources,
                                   init_acc, [], 0)
    set_rng_state(saved["rng"], ctx.generator)
    run = Distillation.create(s, saved["clips"].to(dev), saved["labels"].to(dev), saved["alpha"].to(dev),
                              saved["sources"].numpy(), saved["init_acc"], saved["history"], saved["iteration"])
    run.opt_x.load_state_dict(saved["opt_x"])
    run.opt_a.load_state_dict(saved["opt_a"])
    run.opt_y.load_state_dict(saved["opt_y"])
    ctx.log.info("DATM: resuming at iteration %d from %s", run.iteration, ckpt.path)
    return run


def iterate(ctx: Context, run: Distillation, experts: Experts, inner: InnerLoop, it: int, accel: Accel,
            hflip: C.HFlip) -> dict:
    """Iteration ``it`` (module docstring): draw the expert segment and the inner steps' plans, match,
    update clips / alpha / labels unless the loss is above the threshold. ``hflip``: the dataset's flip
    (mode off: no inner step mirrors a clip; its label map is ``inner``'s). Returns the history record."""
    s, t, dev = ctx.settings, ctx.temporal, ctx.device
    start_epoch, upper = sample_start_epoch(it, s, ctx.generator)
    e = int(torch.randint(experts.num_experts, (1,), generator=ctx.generator))
    theta0 = experts.snapshot(e, start_epoch, dev)
    target = experts.snapshot(e, start_epoch + int(s["expert_epochs"]), dev)
    plans = plan_steps(len(run.clips), int(s["syn_steps"]), s["batch_syn"] or len(run.clips), t.t_c, ctx.clip_len,
                       t.sampling, s["inner_augment"], ctx.generator, dev, size=ctx.input_size,
                       scale=tuple(s["inner_crop_scale"]), flip=hflip.mode != "off")
    with accel.autocast():  # float32 unless performance.datm_bf16 (vdc/accel.py)
        r = match(inner, theta0, target, run.clips, run.labels, run.alpha, plans, s["memory"])
    if not math.isfinite(r.loss):
        raise NonFiniteError(f"{ctx.job}: DATM's matching loss is {r.loss} at iteration {it} (expert {e}, start "
                             f"epoch {start_epoch}); nothing was written. Lower methods.<name>.lr_clips / lr_lr "
                             f"or lr_teacher and rerun")
    skipped = not r.loss <= float(s["threshold"])
    if not skipped:
        for p, g, o in ((run.clips, r.grad_clips, run.opt_x), (run.alpha, r.grad_alpha, run.opt_a),
                        (run.labels, r.grad_labels, run.opt_y)):
            p.grad = g
            o.step()
            o.zero_grad(set_to_none=True)
    return {"it": it, "loss": r.loss, "alpha": float(run.alpha.detach()), "start_epoch": start_epoch, "upper": upper,
            "expert": e, "skipped": skipped}


def output(ctx: Context, run: Distillation, wall_time_s: float) -> CondensedSet:
    """The synthetic set in pixel space [N, T_c, S, S, 3] with its learned label logits."""
    s = ctx.settings
    out = C.denormalize(run.clips.detach()).permute(0, 2, 3, 4, 1).cpu().numpy().astype(np.float32)
    hard = np.repeat(np.arange(ctx.num_classes), ctx.ipc)
    losses = [h["loss"] for h in run.history]
    attrs = ctx.base_attrs()
    attrs.update({"alpha": float(run.alpha.detach()), "iterations": int(s["iterations"]),
                  "skipped": int(sum(h["skipped"] for h in run.history)),
                  "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                  "init_expert_accuracy": run.init_acc, "memory": s["memory"],
                  "experts_file": str(ctx.experts_path), "wall_time_s": wall_time_s,
                  "source_video_meaning": "the real video each synthetic clip was initialised from"})
    keys = ("loss", "alpha", "start_epoch", "upper", "expert", "skipped")
    history = {k: np.asarray([float(h[k]) for h in run.history], np.float64) for k in keys}
    return CondensedSet(clips=out, labels=hard, source_video=run.sources,
                        label_logits=run.labels.detach().cpu().numpy().astype(np.float32), attrs=attrs,
                        history=history)


def distill(ctx: Context, on_iteration: Callable[[int, dict], None] | None = None) -> CondensedSet:
    """Run DATM for ``ctx`` (resuming from its checkpoint); ``on_iteration(it, record)`` is called after
    each iteration (tests use it to simulate a kill)."""
    s = ctx.settings
    iterations, every, log_every = int(s["iterations"]), int(s["checkpoint_every"]), int(s["log_every"])
    experts = open_experts(ctx)
    try:
        fmodel = student(experts, ctx.device)
        # the dataset's flip (module docstring): off: never mirrored; on: labels kept; map: the paired
        # classes' logits swapped (vdc/condense/trajectory.py; the inner loop keeps the map on the device)
        hflip = C.HFlip.of(ctx.dataset, ctx.frames.classes)
        inner = InnerLoop(fmodel, ctx.clip_len, ctx.temporal.interpolation, hflip.label_map if hflip.maps else None)
        accel = Accel.from_settings(ctx.stage, ctx.device).for_datm()
        ckpt = ctx.checkpoint("datm")
        run = start(ctx, ckpt, experts, fmodel)
        t0 = time.time()
        progress = Progress(iterations, f"DATM {ctx.job}", ctx.log, unit="iteration", initial=run.iteration)
        for it in range(run.iteration, iterations):
            rec = iterate(ctx, run, experts, inner, it, accel, hflip)
            run.history.append(rec)
            run.iteration = it + 1
            progress.update(milestone=(it + 1) % log_every == 0, loss=rec["loss"], alpha=rec["alpha"],
                            start_epoch=rec["start_epoch"], window=f"[{s['min_start_epoch']},{rec['upper']})",
                            expert=rec["expert"], skipped=rec["skipped"])
            if (it + 1) % every == 0 and it + 1 < iterations:
                run.check_finite(ctx.job)
                ckpt.save(run.state(ctx.generator))
            if on_iteration is not None:
                on_iteration(it, rec)
        progress.close()
    finally:
        experts.close()
    run.check_finite(ctx.job)
    return output(ctx, run, time.time() - t0)


@register_method("datm")
def condense(ctx: Context) -> CondensedSet:
    return distill(ctx)
