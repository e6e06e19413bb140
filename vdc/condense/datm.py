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

Checkpoints (every ``checkpoint_every`` iterations, in ``ctx.workdir/datm.pt``): synthetic clips,
labels, alpha, the three optimiser states, the generator state and the history; a killed job resumes
there and ends with the same synthetic set as an uninterrupted run (CPU). Raising ``iterations``
and rerunning continues a finished run's last checkpoint. The per-iteration history (loss, alpha,
start epoch, window, expert, skipped) is written to ``ctx.workdir/history.json``.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.trajectory import FlatModel, InnerLoop, clip_view, match, plan_steps
from vdc.condensed import CondensedSet
from vdc.data import clips as C
from vdc.models import create_model
from vdc.train.experts import Experts
from vdc.utils import save_torch, write_json


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


def _identity(s: dict, ctx: Context) -> str:
    """What a checkpoint must share to be resumed: the settings (``iterations`` may grow: a run can be
    extended) and the frames and experts files (path, size, modification time)."""
    files = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (ctx.frames_path, ctx.experts_path)]
    return json.dumps({"settings": {k: v for k, v in s.items() if k not in ("iterations", "checkpoint_every", "log_every")},
                       "files": files, "ipc": ctx.ipc, "seed": ctx.seed}, sort_keys=True)


def _check(s: dict, experts: Experts, ctx: Context) -> None:
    need = int(s["max_start_epoch"]) + int(s["expert_epochs"])
    if need > experts.keep_epochs:
        raise ValueError(f"{experts.path}: DATM needs snapshots up to epoch max_start_epoch + expert_epochs = {need}, "
                         f"the file stores 0..{experts.keep_epochs}; raise experts.keep_epochs/epochs or lower max_start_epoch")
    if int(s["min_start_epoch"]) >= int(s["max_start_epoch"]):
        raise ValueError("methods.datm: min_start_epoch must be below max_start_epoch")
    if experts.num_classes != ctx.num_classes:
        raise ValueError(f"{experts.path}: experts have {experts.num_classes} classes, {ctx.frames_path} has "
                         f"{ctx.num_classes}; rerun the experts stage for this dataset")
    model = ctx.stage.get("experts_model")
    if model is not None and model != experts.model:
        raise ValueError(f"{experts.path}: experts were trained with model settings {experts.model}, the config "
                         f"now says {model}; rerun the experts stage")


def _initialise(ctx: Context, experts: Experts, fmodel: FlatModel, s: dict):
    """(clips [N, 3, T_c, S, S] normalised, label logits [N, K], source video ids [N], init accuracy)."""
    t, bank, dev = ctx.temporal, ctx.train_bank, ctx.device
    size, clip_len = ctx.input_size, ctx.clip_len
    interval = int(ctx.dataset.get("clip_interval", 8))
    label_epoch = s.get("label_epoch")
    label_epoch = min(int(s["max_start_epoch"] if label_epoch is None else label_epoch), experts.keep_epochs)
    thetas = [experts.snapshot(e, label_epoch, dev) for e in range(experts.num_experts)]
    labels_all = bank.labels.cpu().numpy()
    clips, logits, sources, correct_frac = [], [], [], []
    for c in range(ctx.num_classes):
        pos = np.flatnonzero(labels_all == c)
        if len(pos) == 0:
            raise ValueError(f"{ctx.frames_path}: class {c} has no training videos; DATM cannot initialise it")
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


def distill(ctx: Context, on_iteration: Callable[[int, dict], None] | None = None) -> CondensedSet:
    """Run DATM for ``ctx`` (resuming from ``ctx.workdir/datm.pt``); ``on_iteration(it, record)`` is
    called after each iteration (tests use it to simulate a kill)."""
    s = ctx.settings
    t = ctx.temporal
    dev = ctx.device
    experts = Experts(ctx.experts_path) if ctx.experts_path else None
    if experts is None:
        raise ValueError("DATM needs an experts file (methods.datm.needs: [experts]); none was given")
    _check(s, experts, ctx)
    model = create_model(experts.arch, experts.num_classes, **experts.model).to(dev)
    fmodel = FlatModel(model)
    if fmodel.num_params != experts.num_params:
        raise ValueError(f"{experts.path}: {experts.num_params} parameters per snapshot, {experts.arch} "
                         f"{experts.model} has {fmodel.num_params}; rerun the experts stage")
    inner = InnerLoop(fmodel, ctx.clip_len, t.interpolation)
    ckpt_path = ctx.workdir / "datm.pt"

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if ck is not None and ck["settings"] != _identity(s, ctx):
        ctx.log.warning("%s: checkpoint of other settings or input files; starting over", ckpt_path)
        ck = None
    if ck is not None:
        clips, labels = ck["clips"].to(dev), ck["labels"].to(dev)
        alpha = ck["alpha"].to(dev)
        sources, init_acc, history, start_it = ck["sources"], ck["init_acc"], ck["history"], ck["iteration"]
        ctx.generator.set_state(ck["generator"])
        ctx.log.info("DATM: resuming at iteration %d from %s", start_it, ckpt_path)
    else:
        clips, labels, sources, init_acc = _initialise(ctx, experts, fmodel, s)
        alpha = torch.tensor(float(s["lr_teacher"]), device=dev)
        history, start_it = [], 0
        ctx.log.info("DATM: %d synthetic videos initialised; experts classify %.1f%% of them correctly",
                     len(clips), 100 * init_acc)
    clips, labels, alpha = (v.detach().clone().requires_grad_(True) for v in (clips, labels, alpha))
    opt_x = torch.optim.SGD([clips], lr=float(s["lr_clips"]), momentum=float(s["momentum_clips"]))
    opt_a = torch.optim.SGD([alpha], lr=float(s["lr_lr"]), momentum=float(s.get("momentum_lr", 0.5)))
    opt_y = torch.optim.SGD([labels], lr=float(s["lr_labels"]), momentum=float(s["momentum_labels"]))
    if ck is not None:
        opt_x.load_state_dict(ck["opt_x"])
        opt_a.load_state_dict(ck["opt_a"])
        opt_y.load_state_dict(ck["opt_y"])

    n_syn = len(clips)
    batch_syn = int(s.get("batch_syn") or n_syn)
    iterations, every = int(s["iterations"]), int(s["checkpoint_every"])
    log_every = int(s.get("log_every", 10))
    t0 = time.time()
    bar = tqdm(range(start_it, iterations), desc="datm", disable=None, initial=start_it, total=iterations)
    for it in bar:
        start, upper = sample_start_epoch(it, s, ctx.generator)
        e = int(torch.randint(experts.num_experts, (1,), generator=ctx.generator))
        theta0 = experts.snapshot(e, start, dev)
        target = experts.snapshot(e, start + int(s["expert_epochs"]), dev)
        plans = plan_steps(n_syn, int(s["syn_steps"]), batch_syn, t.t_c, ctx.clip_len, t.sampling,
                           bool(s.get("flip", True)), ctx.generator, dev)
        r = match(inner, theta0, target, clips, labels, alpha, plans, s.get("memory", "recompute"))
        skipped = not r.loss <= float(s["threshold"])
        if not skipped:
            for p, g, o in ((clips, r.grad_clips, opt_x), (alpha, r.grad_alpha, opt_a), (labels, r.grad_labels, opt_y)):
                p.grad = g
                o.step()
                o.zero_grad(set_to_none=True)
        rec = {"it": it, "loss": r.loss, "alpha": float(alpha.detach()), "start_epoch": start, "upper": upper,
               "expert": e, "skipped": skipped}
        history.append(rec)
        bar.set_postfix(loss=f"{r.loss:.4f}", alpha=f"{float(alpha.detach()):.4g}", window=f"[{s['min_start_epoch']},{upper})")
        if it % log_every == 0 or it == iterations - 1:
            ctx.log.info("DATM it %d: loss %.5f alpha %.5g start epoch %d of [%d, %d) expert %d%s", it, r.loss,
                         float(alpha.detach()), start, int(s["min_start_epoch"]), upper, e, " (skipped)" if skipped else "")
        if (it + 1) % every == 0 and it + 1 < iterations:
            save_torch({"clips": clips.detach().cpu(), "labels": labels.detach().cpu(), "alpha": alpha.detach().cpu(),
                        "opt_x": opt_x.state_dict(), "opt_a": opt_a.state_dict(), "opt_y": opt_y.state_dict(),
                        "generator": ctx.generator.get_state(), "iteration": it + 1, "history": history,
                        "sources": sources, "init_acc": init_acc, "settings": _identity(s, ctx)},
                       ckpt_path)
        if on_iteration is not None:
            on_iteration(it, rec)
    experts.close()
    write_json(ctx.workdir / "history.json", history)

    out = C.denormalize(clips.detach()).permute(0, 2, 3, 4, 1).cpu().numpy().astype(np.float32)  # [N, T_c, S, S, 3]
    hard = np.repeat(np.arange(ctx.num_classes), ctx.ipc)
    losses = [h["loss"] for h in history]
    attrs = ctx.base_attrs()
    attrs.update({"alpha": float(alpha.detach()), "iterations": iterations, "skipped": int(sum(h["skipped"] for h in history)),
                  "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                  "init_expert_accuracy": init_acc, "memory": s.get("memory", "recompute"),
                  "experts_file": str(ctx.experts_path), "wall_time_s": time.time() - t0,
                  "source_video_meaning": "the real video each synthetic clip was initialised from"})
    return CondensedSet(clips=out, labels=hard, source_video=np.asarray(sources, np.int64),
                        label_logits=labels.detach().cpu().numpy().astype(np.float32), attrs=attrs)


@register_method("datm")
def condense(ctx: Context) -> CondensedSet:
    return distill(ctx)
