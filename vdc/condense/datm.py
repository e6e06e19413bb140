"""DATM — difficulty-aligned trajectory matching (Guo et al., ICLR 2024) for video (study.md section 6).

Synthetic set. IPC videos per class of T_c frames (``ctx.temporal``) at the input size, optimised in
the network's normalised space (ImageNet mean/std) as float32 [N, 3, T_c, S, S]; the output is
denormalised to [0, 1] pixel space (unclipped) as [N, T_c, S, S, 3]. Each has learnable label
logits [N, K]; one learnable step size alpha (initial value ``lr_teacher``).

Initialisation. Per class, up to ``init_candidates`` training videos in random order; from each a
T_c-frame window at the clip interval (``train_frame_indices`` with clip_len = T_c), centre-cropped
to the input size. Every expert's snapshot ``label_epoch`` (default max_start_epoch) classifies the
centre clip_len-frame window; the IPC candidates that the most experts classify correctly are kept
(ties: the random order). Label logits = the mean logits of the experts that classify the clip
correctly (of all experts when none does). Classes with fewer than IPC videos reuse videos (new
windows).

Iteration it (``iterations`` in all):
  U  = min(current_max_start_epoch + floor((max_start_epoch - current_max_start_epoch) * it / expansion_end_epoch),
           max_start_epoch)                                     (difficulty alignment; U = max when expansion_end = 0)
  s ~ U{min_start_epoch, ..., U-1}, expert e ~ U{0..E-1}; theta_0 = snapshot(e, s), theta* = snapshot(e, s + expert_epochs)
  syn_steps inner SGD steps of the student on minibatches of ``batch_syn`` synthetic clips, each
  seen through the temporal sampling (naive / segment / sliding windows of clip_len frames; dup /
  linear interpolation when T_c < clip_len) and a random flip, soft cross-entropy against
  softmax(label logits); loss = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2
  (vdc/condense/trajectory.py, exact gradient in bounded memory with ``memory: recompute``);
  clips: SGD(lr_clips, momentum 0.5), alpha: SGD(lr_lr, momentum 0.5), labels: SGD(lr_labels,
  momentum 0.9); no update when loss > threshold.

Expert per iteration: uniform over the experts (the reference cycles through a shuffled list).

Checkpoint (``ctx.checkpoint("datm")``, vdc/resume.py; every ``checkpoint_every`` iterations):
synthetic clips, labels, alpha, the three optimiser states, the generator state and the per-iteration
history (loss, alpha, start epoch, window, expert, skipped); tied to the job's settings, the frames and
experts files' contents and the code. A killed job resumes there and ends with the same synthetic set
as an uninterrupted run (CPU); the stage removes the checkpoint once the set is written. Progress
lines every ``log_every`` iterations (and at least every 30 s). A non-finite matching loss or
synthetic set stops the job with NonFiniteError; nothing is written.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

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


def _initialise(ctx: Context, experts: Experts, fmodel: FlatModel, s: dict):
    """(clips [N, 3, T_c, S, S] normalised, label logits [N, K], source video ids [N], init accuracy)."""
    t, bank, dev = ctx.temporal, ctx.train_bank, ctx.device
    size, clip_len = ctx.input_size, ctx.clip_len
    interval = int(ctx.dataset["clip_interval"])
    label_epoch = s["label_epoch"]
    label_epoch = min(int(s["max_start_epoch"] if label_epoch is None else label_epoch), experts.keep_epochs)
    thetas = [experts.snapshot(e, label_epoch, dev) for e in range(experts.num_experts)]
    labels_all = bank.labels.cpu().numpy()
    clips, logits, sources, correct_frac = [], [], [], []
    for c in range(ctx.num_classes):
        pos = np.flatnonzero(labels_all == c)
        if len(pos) == 0:
            raise InputError(f"{ctx.frames_path}: class {c} has no training videos; DATM cannot initialise it")
        pos = ctx.rng.permutation(pos)[:int(s["init_candidates"])]
        if len(pos) < ctx.ipc:
            pos = np.resize(pos, ctx.ipc)  # reuse videos; each copy gets its own random window
        v = torch.as_tensor(pos, device=dev)
        fi = C.train_frame_indices(bank.lengths[v], t.t_c, interval, generator=ctx.generator)
        x = C.normalize(C.center_crop(bank.gather(v, fi), size))                 # [n, 3, T_c, S, S]
        with torch.no_grad():
            view = network_view(x, clip_len, t.interpolation)
            lg = torch.stack([fmodel(th, view) for th in thetas])                 # [E, n, K]
        ok = lg.argmax(2) == c                                                    # [E, n]
        order = torch.argsort(ok.sum(0), descending=True, stable=True)[:ctx.ipc]
        okk = ok[:, order].to(lg.dtype)                                           # [E, ipc]
        sel = lg[:, order]                                                        # [E, ipc, K]
        n_ok = okk.sum(0)
        mean_ok = (sel * okk.unsqueeze(2)).sum(0) / n_ok.clamp(min=1).unsqueeze(1)
        logits.append(torch.where((n_ok > 0).unsqueeze(1), mean_ok, sel.mean(0)))
        clips.append(x[order])
        sources.append(bank.ids[v.cpu()[order.cpu()]])
        correct_frac.append(float(okk.mean()))
    return (torch.cat(clips), torch.cat(logits), torch.cat(sources).numpy(), float(np.mean(correct_frac)))


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


def iterate(ctx: Context, run: Distillation, experts: Experts, inner: InnerLoop, it: int) -> dict:
    """Iteration ``it`` (module docstring): draw the expert segment and the inner steps' plans, match,
    update clips / alpha / labels unless the loss is above the threshold. Returns the history record."""
    s, t, dev = ctx.settings, ctx.temporal, ctx.device
    start_epoch, upper = sample_start_epoch(it, s, ctx.generator)
    e = int(torch.randint(experts.num_experts, (1,), generator=ctx.generator))
    theta0 = experts.snapshot(e, start_epoch, dev)
    target = experts.snapshot(e, start_epoch + int(s["expert_epochs"]), dev)
    plans = plan_steps(len(run.clips), int(s["syn_steps"]), s["batch_syn"] or len(run.clips), t.t_c, ctx.clip_len,
                       t.sampling, bool(s["flip"]), ctx.generator, dev)
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
    return CondensedSet(clips=out, labels=hard, source_video=run.sources,
                        label_logits=run.labels.detach().cpu().numpy().astype(np.float32), attrs=attrs)


def distill(ctx: Context, on_iteration: Callable[[int, dict], None] | None = None) -> CondensedSet:
    """Run DATM for ``ctx`` (resuming from its checkpoint); ``on_iteration(it, record)`` is called after
    each iteration (tests use it to simulate a kill)."""
    s = ctx.settings
    iterations, every, log_every = int(s["iterations"]), int(s["checkpoint_every"]), int(s["log_every"])
    experts = open_experts(ctx)
    try:
        fmodel = student(experts, ctx.device)
        inner = InnerLoop(fmodel, ctx.clip_len, ctx.temporal.interpolation)
        ckpt = ctx.checkpoint("datm")
        run = start(ctx, ckpt, experts, fmodel)
        t0 = time.time()
        progress = Progress(iterations, f"DATM {ctx.job}", ctx.log, unit="iteration", initial=run.iteration)
        for it in range(run.iteration, iterations):
            rec = iterate(ctx, run, experts, inner, it)
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
