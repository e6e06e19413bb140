"""EDC for video: space-time statistical matching with one or several condensation networks.

Synthetic set: ``IPC`` videos per class, each ``T_c`` frames of ``input_size``² RGB, held as one
tensor [N, T_c, S, S, 3] in ImageNet-normalised space (so the learning rate 0.05 means what it means
in the reference, which optimises normalised images) and clamped to the valid pixel range [0, 1]
after every step. Labels are class-major: clip i has class i // IPC.

Initialisation (``init``): ``real`` — for each class IPC random training videos (seeded), each the
centre window of T_c frames at the clip interval (floor(L/T_c) when shorter), centre-cropped to
input_size; ``rded`` — the clips of the RDED set at ``ctx.init_path`` (T' frames; T' < T_c is
stretched by repeating frames, T' > T_c keeps the centre T_c), centre-cropped.

Batches: the class-major set is cut into consecutive chunks of ``batch`` videos, and each chunk is
optimised on its own for ``iterations`` iterations (fresh Adam, cosine schedule and EMA), as
SRe2L/EDC's recover step does per batch. Class-major chunks hold as few classes as the batch size
allows, which keeps the class-wise targets as class-specific as possible.

One iteration on a chunk x [B, T_c, S, S, 3] with labels y [B]:

1. network  = networks[it mod len(networks)] (rotation, eval mode, frozen);
2. clip     = frames ``condensed_frame_indices(B, T_c, clip_len, sampling)`` of each video, brought to
   clip_len frames by ``interpolate_time(interp)`` when T_c < clip_len;
3. view     = random resized crop (area ``scale`` = 0.5–1, ratio 3/4–4/3) + the dataset's flip
   (``datasets.<name>.hflip``: off / on with p 0.5 / map), the same for all frames of a clip, resized
   to S (bilinear ``grid_sample``: differentiable w.r.t. the clips); the view's class y' is y, or the
   paired class of a flipped clip under ``hflip: map`` (the teacher learnt mirrored clips so);
4. loss     = CE(net(view), y') + r_bn · Σ_l w_l · d_l over the matched modules l (``match_modules``):
   every BatchNorm3d (``bn``), and every Conv3d as well (``bn_conv``, the default: shaoshitong/EDC
   ``Branch_full_ImageNet_1k/recover/recover.py`` 75-103 hooks every BatchNorm2d and Conv2d).
   w_l = ``first_layer_weight`` (10) for the first matched module in ``named_modules`` order
   (``recover.py`` 229-231, ``rescale[0]``: with convolutions matched that is the stem's first
   convolution, whose input is the clip itself) and 1 for the others. At the input z [B, C, T, H, W]
   of module l, with statistics as vdc/formats/stats.py defines them:

       μ = mean_{b,t,h,w} z,   σ² = var_{b,t,h,w} z (biased)                              [C]
       conv also: pμ[p], pσ²[p] = mean, var over (b, c, t, h, w in patch tube p) of z     [P]
       μ̂ = EMA_t(μ) + μ − sg(μ),   EMA_t(μ) = m·EMA_{t−1}(μ) + (1−m)·sg(μ)  (EMA_0 = sg(μ))
       BN:   d_l = ½(‖μ_g − μ̂‖₂ + ‖σ²_g − σ̂²‖₂) + ½(‖μ_cls − μ̂‖₂ + ‖σ²_cls − σ̂²‖₂)
       conv: d_l = ½(‖μ_g − μ̂‖₂ + ‖σ²_g − σ̂²‖₂ + ‖pμ_g − pμ̂‖₂ + ‖pσ²_g − pσ̂²‖₂) + ½(the same with _cls)

   (every hatted statistic likewise; sg = stop-gradient), as the reference's BNFeatureHook /
   ConvFeatureHook compute them (``recover/utils.py`` 205-225, 466-501). So μ̂ has the EMA's value and
   the current batch's gradient. Global targets _g: a BatchNorm layer's running statistics; a
   convolution's statistics over the whole training set (the statistics file). Class targets _cls:
   the file's class targets averaged over the views' classes, μ_cls = (1/B) Σ_b class_mean[y'_b] (the
   reference's rule). ``class_wise: false`` (EDC†) drops the second half. The EMA state is kept per
   network and module. Module inputs are cast to float32 before their statistics are taken, so under
   the GPU fast paths (bf16 autocast of the forward, channels_last_3d networks: vdc/accel.py) the
   statistics, the losses and the clips stay float32.
5. Adam (betas 0.5, 0.9), lr_t = lr · ½(1 + cos(π t / iterations)); clamp to pixel range.

Nothing inside the iteration loop reads a device value except at log milestones (every
``log_every`` iterations, or when a progress line is due) and at checkpoints (the finiteness check).

Checkpoint (``ctx.checkpoint("edc")``, vdc/resume.py; every ``checkpoint_every`` iterations and after
each chunk): the whole synthetic tensor, chunk and iteration, Adam state, EMA states and the torch
generator, tied to the job's settings, the contents of the frames, teacher, statistics and init files
and the code; a rerun of the same job resumes from it and gives the same result as an uninterrupted
run. The stage removes it once the set is written. Progress lines every ``log_every`` iterations (and
at least every 30 s); a non-finite loss or synthetic clip stops the job with NonFiniteError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vdc.accel import Accel, setup_backends
from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condensed import CondensedSet
from vdc.data import clips as C
from vdc.errors import ConfigError, InputError, NonFiniteError, check_finite
from vdc.formats.stats import EDCStats, channel_moments, check_matches, hooked_modules, patch_moments, read_stats
from vdc.progress import Progress
from vdc.resume import Checkpoint, rng_state, set_rng_state


# ----------------------------------------------------------------------------- statistics matching

def ema_stat(prev: torch.Tensor | None, current: torch.Tensor, momentum: float):
    """EMA smoothing with a straight-through gradient.

    value = momentum·prev + (1−momentum)·sg(current)  (value = sg(current) when prev is None);
    returns (value + current − sg(current), value): the first has the EMA's value and the gradient
    of ``current`` (coefficient 1); the second, detached, is the new EMA state."""
    cur = current.detach()
    value = cur if prev is None else momentum * prev + (1 - momentum) * cur
    return value + current - cur, value


# the statistics matched at each kind of module, in the order of its EMA state
STATS = {"bn": ("mean", "var"), "conv": ("mean", "var", "patch_mean", "patch_var")}


class StatMatcher:
    """Forward hooks on the matched modules of one network computing EDC's statistics distance.

    Modules (``match``, vdc/formats/stats.py ``hooked_modules``): every BatchNorm3d (``bn``), plus every
    Conv3d (``bn_conv``, the reference's). Set ``labels`` (long [B], the classes of the views) before
    the forward; after it, ``loss()`` returns Σ_l w_l·d_l (module docstring) and clears the collected
    terms. ``stats`` (the network's statistics file) is needed for the class-wise terms and for the
    global targets of the convolutions. The weight ``first_layer_weight`` goes to the first matched
    module in ``named_modules`` order (the reference's ``rescale[0]``), whatever order the forward
    reaches the modules in."""

    def __init__(self, net: nn.Module, stats: EDCStats | None, first_layer_weight: float = 10.0,
                 ema_momentum: float = 0.8, class_wise: bool = True, match: str = "bn_conv"):
        self.modules = hooked_modules(net, match)
        if not any(kind == "bn" for _, _, kind in self.modules):
            raise ValueError(f"EDC: {type(net).__name__} has no BatchNorm3d layer to match")
        if stats is None and (class_wise or match == "bn_conv"):
            raise ValueError("EDC: class-wise matching and convolution statistics need the statistics file of "
                             "this network")
        self.momentum = float(ema_momentum)
        self.class_wise = class_wise
        self.weight = {name: float(first_layer_weight) if i == 0 else 1.0
                       for i, (name, _, _) in enumerate(self.modules)}
        dev = next(net.parameters()).device
        self.glob, self.cls, self.grid = {}, {}, {}

        def t(a):
            return torch.as_tensor(a, dtype=torch.float32, device=dev)

        for name, mod, kind in self.modules:
            ls = stats.layers[name] if stats is not None else None
            if kind == "conv":
                self.glob[name] = tuple(t(getattr(ls, key)) for key in STATS["conv"])
                self.grid[name] = tuple(int(g) for g in ls.grid)
            if class_wise:
                self.cls[name] = tuple(t(getattr(ls, f"class_{key}")) for key in STATS[kind])
        self.ema: dict[str, tuple[torch.Tensor, ...]] = {}
        self.labels: torch.Tensor | None = None
        self.terms: list[torch.Tensor] = []
        self._handles = [mod.register_forward_hook(self._hook(name, kind)) for name, mod, kind in self.modules]

    def _batch_stats(self, name: str, kind: str, z: torch.Tensor) -> list[torch.Tensor]:
        """The statistics of the view batch z [B, C, T, H, W] (float32): channel mean and variance over
        (b, t, h, w); for a convolution also the patch-tube mean and variance over (b, c, t, h, w in p)."""
        out = list(channel_moments(z, per_sample=False))
        if kind == "conv":
            pm, pv, grid = patch_moments(z, per_sample=False)
            if grid != self.grid[name]:
                raise InputError(f"EDC: module {name} sees {grid[0]}x{grid[1]} patches, its statistics were "
                                 f"taken over {self.grid[name][0]}x{self.grid[name][1]}: the statistics file was "
                                 f"computed at another input size; rerun the stats stage")
            out += [pm, pv]
        return out

    def _hook(self, name: str, kind: str):
        def fn(module, inputs, output):
            z = inputs[0]
            with torch.autocast(z.device.type, enabled=False):       # float32 statistics under bf16 autocast
                current = self._batch_stats(name, kind, z.float())
                prev = self.ema.get(name, (None,) * len(current))
                smoothed = [ema_stat(p, c, self.momentum) for p, c in zip(prev, current)]
                hat = [s[0] for s in smoothed]
                self.ema[name] = tuple(s[1] for s in smoothed)
                glob = (module.running_mean, module.running_var) if kind == "bn" else self.glob[name]
                d = 0.5 * sum(torch.linalg.vector_norm(g.float() - h) for g, h in zip(glob, hat))
                if self.class_wise:
                    y = self.labels
                    d = d + 0.5 * sum(torch.linalg.vector_norm(c[y].mean(0) - h) for c, h in zip(self.cls[name], hat))
            self.terms.append(self.weight[name] * d)
        return fn

    def loss(self) -> torch.Tensor:
        if not self.terms:
            raise RuntimeError("StatMatcher.loss(): no matched module input was seen; run the forward first")
        out = torch.stack(self.terms).sum()
        self.terms = []
        return out

    def reset(self) -> None:
        self.ema = {}
        self.terms = []

    def state_dict(self) -> dict:
        return {k: tuple(v.cpu() for v in vs) for k, vs in self.ema.items()}

    def load_state_dict(self, state: dict, device) -> None:
        self.ema = {k: tuple(v.to(device) for v in vs) for k, vs in state.items()}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


# ----------------------------------------------------------------------------- initialisation

def _centre_crop_thwc(clips: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of [B, T, H, W, 3] (uint8 or float) -> float [B, T, size, size, 3] in [0, 1]."""
    return C.center_crop(clips, size).permute(0, 2, 3, 4, 1).contiguous()


def init_real(ctx: Context, t_c: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """IPC random training videos per class (ctx.rng), centre T_c-frame window, centre crop.
    Returns pixels [N, T_c, S, S, 3] in [0, 1], labels [N] (class-major), source video ids [N]."""
    fr = ctx.frames
    ids, labels = [], []
    for k in range(ctx.num_classes):
        pool = fr.class_ids("train", k)
        if len(pool) == 0:
            raise InputError(f"{fr.path}: class {fr.classes[k]} has no training video to initialise EDC from")
        pick = ctx.rng.choice(pool, size=ctx.ipc, replace=len(pool) < ctx.ipc)
        ids += [int(v) for v in pick]
        labels += [k] * ctx.ipc
    ids = np.asarray(ids, np.int64)
    lengths = torch.as_tensor(fr.lengths[ids])
    idx = C.center_frame_indices(lengths, t_c, int(ctx.dataset["clip_interval"]))
    raw = torch.from_numpy(np.stack([fr.read_frames(int(v), i.tolist()) for v, i in zip(ids, idx)]))
    return _centre_crop_thwc(raw, ctx.input_size), np.asarray(labels, np.int64), ids


def init_rded(ctx: Context, t_c: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The first IPC clips of each class of the condensed set at ctx.init_path, brought to T_c frames
    (repeat frames when shorter, centre T_c when longer) and centre-cropped."""
    if ctx.init_path is None:
        raise ConfigError(f"{ctx.job}: EDC init: rded needs an RDED condensed set (--init); the condense rule "
                          f"passes it")
    cs = CondensedSet.read(ctx.init_path)
    order = []
    for k in range(ctx.num_classes):
        members = np.flatnonzero(cs.labels == k)
        if len(members) < ctx.ipc:
            raise InputError(f"{ctx.init_path}: {len(members)} clips of class {k}, EDC needs {ctx.ipc}; "
                             f"use an RDED set of the same IPC")
        order += members[:ctx.ipc].tolist()
    x = cs.clips_unit_float()[order]
    t = x.shape[1]
    if t < t_c:
        x = x[:, (torch.arange(t_c) * t) // t_c]
    elif t > t_c:
        s0 = (t - t_c) // 2
        x = x[:, s0:s0 + t_c]
    labels = np.repeat(np.arange(ctx.num_classes), ctx.ipc)
    return _centre_crop_thwc(x, ctx.input_size), labels, np.asarray(cs.source_video)[order]


# ----------------------------------------------------------------------------- one iteration

def make_view(x: torch.Tensor, t_c: int, clip_len: int, sampling: str, interp: str, size: int,
              scale, generator: torch.Generator, hflip: C.HFlip | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input from synthetic videos x [B, T_c, S, S, 3] (normalised): temporal sampling,
    interpolation, then random resized crop + flip (``hflip``; None = mode on) per clip ->
    ([B, 3, T, size, size], flipped bool [B]). Cropping is bilinear with weights summing to one, so it
    commutes with the per-channel normalisation."""
    b, _, h, w, _ = x.shape
    idx = C.condensed_frame_indices(b, t_c, clip_len, sampling, generator, device=x.device)
    v = x[torch.arange(b, device=x.device).unsqueeze(1), idx]
    v = C.interpolate_time(v, clip_len, interp)
    boxes = C.sample_resized_crop_boxes(b, h, w, scale=tuple(scale), generator=generator)
    flipped = (hflip or C.HFlip("on")).draw(b, generator, device=x.device)
    return C.crop_resize(v, boxes, size, flipped), flipped


@dataclass
class StepSettings:
    """What one iteration needs besides the network and the chunk: the view of the synthetic clips
    (temporal sampling, interpolation, random resized crop to ``size``, the dataset's flip ``hflip``,
    None = mode on) and the weight ``r_bn`` of the statistics term; ``accel`` the GPU fast paths
    (vdc/accel.py; None = float32). ``lo`` / ``hi`` (set from ``device``) are the pixel range [0, 1] in
    normalised space, the clamp after every step."""

    t_c: int
    clip_len: int
    sampling: str
    interpolation: str
    size: int
    scale: tuple[float, float]
    r_bn: float
    device: torch.device | str = "cpu"
    hflip: C.HFlip | None = None
    accel: Accel | None = None

    def __post_init__(self):
        self.lo = C.normalize_channels_last(torch.zeros(3, device=self.device))
        self.hi = C.normalize_channels_last(torch.ones(3, device=self.device))
        self.hflip = self.hflip or C.HFlip("on")
        self.accel = self.accel or Accel(torch.device(self.device))


def edc_step(x: torch.Tensor, y: torch.Tensor, net: nn.Module, matcher: StatMatcher, opt: torch.optim.Optimizer,
             lr: float, step: StepSettings, generator: torch.Generator) -> dict:
    """One optimisation step of the chunk x (a leaf [B, T_c, S, S, 3], normalised) with network ``net``.
    A flipped view of a clip of class y is a clip of class ``hflip.labels`` (the paired class under
    ``hflip: map``): its cross-entropy and class-wise targets are that class's. The forward runs under
    ``step.accel`` (bf16 autocast on CUDA); losses and statistics are float32. Returns the (device)
    tensors loss, ce, bn; reading them synchronises the device."""
    for g in opt.param_groups:
        g["lr"] = lr
    view, flipped = make_view(x, step.t_c, step.clip_len, step.sampling, step.interpolation, step.size, step.scale,
                              generator, step.hflip)
    y_view = step.hflip.labels(y, flipped)
    matcher.labels = y_view
    with step.accel.autocast():
        logits = net(step.accel.input(view))
    ce = F.cross_entropy(logits.float(), y_view)
    bn = matcher.loss()
    loss = ce + step.r_bn * bn
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        x.copy_(torch.maximum(torch.minimum(x, step.hi), step.lo))
    return {"loss": loss.detach(), "ce": ce.detach(), "bn": bn.detach()}


def cosine_lr(base: float, it: int, total: int) -> float:
    """lr · ½(1 + cos(π·it/total)): base at it = 0, 0 at it = total."""
    return base * 0.5 * (1 + math.cos(math.pi * it / total))


# ----------------------------------------------------------------------------- the method

def condensation_networks(ctx: Context, networks: list[str], class_wise: bool, match: str,
                          accel: Accel) -> tuple[list, list]:
    """The frozen networks (eval mode, in ``accel``'s memory format) and a StatMatcher on each; each
    network's statistics file is read and checked against it when the matching needs it (class-wise
    terms, or convolution inputs: ``match_modules: bn_conv``)."""
    s = ctx.settings
    nets, matchers = [], []
    needs_file = class_wise or match == "bn_conv"
    for arch in networks:
        if needs_file and arch not in ctx.stats_paths:
            why = "class-wise matching" if class_wise else "matching convolution inputs (match_modules: bn_conv)"
            raise ConfigError(f"{ctx.job}: {why} needs the statistics file of network {arch}, and the job was "
                              f"given none; add stats to methods.<name>.needs (or set match_modules: bn)")
        net = ctx.teacher(arch).to(ctx.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        stats = class_statistics(ctx, arch, net) if needs_file else None
        nets.append(accel.prepare(net))
        matchers.append(StatMatcher(net, stats, s["first_layer_weight"], s["ema_momentum"], class_wise, match))
    return nets, matchers


def class_statistics(ctx: Context, arch: str, net: nn.Module) -> EDCStats:
    """The statistics file of network ``arch``, checked to belong to ``net`` and to this dataset."""
    path = ctx.stats_paths[arch]
    stats = read_stats(path)
    check_matches(stats, net, path)
    if stats.layers and next(iter(stats.layers.values())).class_mean.shape[0] != ctx.num_classes:
        raise InputError(f"{path}: statistics for another number of classes than {ctx.frames_path}; rerun the "
                         f"stats stage")
    return stats


def initial_clips(ctx: Context, init: str, t_c: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(pixels [N, T_c, S, S, 3] in [0, 1], class-major labels [N], source video ids [N]) of ``init``."""
    return init_rded(ctx, t_c) if init == "rded" else init_real(ctx, t_c)


HISTORY = ("loss", "ce", "bn", "network", "chunk")  # the set's /history: one row per iteration done


def save_state(ckpt: Checkpoint, syn: torch.Tensor, bounds: tuple[int, int], chunk: int, it: int,
               x_chunk: torch.Tensor | None, opt, matchers: list[StatMatcher], gen: torch.Generator,
               history: list[torch.Tensor]) -> None:
    """Checkpoint at (``chunk``, iteration ``it``): the whole set with the chunk's current clips
    ``x_chunk`` (rows ``bounds``) in place, the chunk's Adam and EMA states, the generator and the
    history so far (rows of HISTORY)."""
    full = syn.detach().clone()
    if x_chunk is not None:
        full[bounds[0]:bounds[1]] = x_chunk.detach()
    ckpt.save({"chunk": chunk, "iter": it, "syn": full.cpu(), "opt": opt.state_dict() if opt is not None else None,
               "ema": [m.state_dict() for m in matchers], "rng": rng_state(gen),
               "history": torch.stack(history).cpu() if history else torch.zeros(0, len(HISTORY))})


def _report(progress: Progress, last: dict, network: str, where: str, chunk: int, it: int, milestone: bool) -> None:
    """A progress line with the step's losses (read from the device), refusing a non-finite loss."""
    metrics = {name: float(v) for name, v in last.items()}
    if not math.isfinite(metrics["loss"]):
        raise NonFiniteError(f"{where}: the EDC loss is {metrics['loss']} (ce {metrics['ce']}, bn {metrics['bn']}) "
                             f"at chunk {chunk}, iteration {it}; nothing was written. Lower methods.<name>.lr or "
                             f"r_bn and rerun")
    progress.update(milestone=milestone, net=network, **metrics)


@register_method("edc")
def condense(ctx: Context) -> CondensedSet:
    s, t, dev, gen = ctx.settings, ctx.temporal, ctx.device, ctx.generator
    networks, class_wise, init = list(s["networks"]), bool(s["class_wise"]), s["init"]
    iters, lr, every, log_every = int(s["iterations"]), float(s["lr"]), int(s["checkpoint_every"]), int(s["log_every"])
    accel = setup_backends(ctx.stage, dev)

    # networks, initial set, chunks
    nets, matchers = condensation_networks(ctx, networks, class_wise, s["match_modules"], accel)
    pixels, labels, source = initial_clips(ctx, init, t.t_c)
    syn = C.normalize_channels_last(pixels.float()).to(dev)
    y_all = torch.as_tensor(labels, device=dev)
    n = syn.shape[0]
    bsz = min(int(s["batch"]), n)
    chunks = [(a, min(a + bsz, n)) for a in range(0, n, bsz)]
    step = StepSettings(t.t_c, ctx.clip_len, t.sampling, t.interpolation, ctx.input_size, tuple(s["scale"]),
                        float(s["r_bn"]), dev, C.HFlip.of(ctx.dataset, ctx.frames.classes), accel)

    # resume
    ckpt = ctx.checkpoint("edc")
    saved = ckpt.load()
    start_chunk, start_it, history = 0, 0, []
    if saved is not None:
        start_chunk, start_it = saved["chunk"], saved["iter"]
        history = list(saved["history"].to(dev))
        syn = saved["syn"].to(dev)
        set_rng_state(saved["rng"], gen)
        ctx.log.info("EDC: resuming from %s at chunk %d, iteration %d", ckpt.path, start_chunk, start_it)

    # each chunk on its own: fresh Adam, cosine schedule and EMA
    progress = Progress(len(chunks) * iters, f"EDC {ctx.job}", ctx.log, unit="iteration",
                        initial=start_chunk * iters + start_it)
    last = {}
    # the network and chunk numbers of the history rows, made on the device once (as torch.tensor(float(i)))
    ids = torch.arange(max(len(nets), len(chunks)), dtype=torch.get_default_dtype(), device=dev)
    for ci in range(start_chunk, len(chunks)):
        a, b = chunks[ci]
        x = syn[a:b].clone().requires_grad_(True)
        y = y_all[a:b]
        opt = torch.optim.Adam([x], lr=lr, betas=tuple(s["betas"]))
        for m in matchers:
            m.reset()
        it0 = 0
        if saved is not None and ci == start_chunk and start_it > 0:
            opt.load_state_dict(saved["opt"])
            for m, ema in zip(matchers, saved["ema"]):
                m.load_state_dict(ema, dev)
            it0 = start_it
        for it in range(it0, iters):
            k = it % len(nets)
            last = edc_step(x, y, nets[k], matchers[k], opt, cosine_lr(lr, it, iters), step, gen)
            history.append(torch.stack([last["loss"].float(), last["ce"].float(), last["bn"].float(),
                                        ids[k], ids[ci]]))
            milestone = (it + 1) % log_every == 0 or it + 1 == iters
            if milestone or progress.due():  # reading the loss synchronises the device
                _report(progress, last, networks[k], ctx.job, ci, it, milestone)
            else:
                progress.update()
            if (it + 1) % every == 0 and it + 1 < iters:
                check_finite(x.detach(), "EDC's synthetic clips", ctx.job)
                save_state(ckpt, syn, chunks[ci], ci, it + 1, x, opt, matchers, gen, history)
        check_finite(x.detach(), "EDC's synthetic clips", ctx.job)
        with torch.no_grad():
            syn[a:b] = x.detach()
        save_state(ckpt, syn, chunks[ci], ci + 1, 0, None, None, matchers, gen, history)
    progress.close()
    for m in matchers:
        m.remove()

    # output: pixels in [0, 1]
    clips = C.denormalize_channels_last(syn).clamp(0, 1).cpu().numpy().astype(np.float32)
    attrs = ctx.base_attrs()
    attrs.update(networks=networks, init=init, class_wise=class_wise, match_modules=s["match_modules"],
                 hflip=step.hflip.mode, iterations=iters, batch=bsz,
                 chunks=len(chunks), final_loss={name: float(v) for name, v in last.items()})
    rows = torch.stack(history).double().cpu().numpy() if history else np.zeros((0, len(HISTORY)))
    return CondensedSet(clips=clips, labels=labels, source_video=np.asarray(source, np.int64), attrs=attrs,
                        history={name: rows[:, i] for i, name in enumerate(HISTORY)})
