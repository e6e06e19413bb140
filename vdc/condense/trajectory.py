"""Trajectory matching's inner loop and the gradient of its loss, with memory bounded by design.

The problem (MTT / DATM). A student network starts from an expert snapshot theta_0 (a flat vector of
P parameters) and takes N plain SGD steps on minibatches of the synthetic set::

    theta_{k+1} = theta_k - alpha * g_k,     g_k = grad_theta L_k(theta_k; X, Y)        k = 0..N-1
    L_k         = soft cross-entropy of the student's logits on view_k(X) against softmax(Y[idx_k])
    loss        = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2

with X the synthetic clips, Y their learnable label logits, alpha the learnable step size and theta*
the expert snapshot M epochs after theta_0. We need d loss / d(X, Y, alpha).

Two exact ways to get it (``memory`` setting):

``naive``     unroll the N steps with ``create_graph=True`` and back-propagate through all of them
              (what MTT/DATM do). Autograd keeps every step's activations and first-order graph alive
              at once: memory grows linearly with N (gpu-anchors.md: ~3.4 GiB per step at UCF101 IPC 1).
``recompute`` reverse-mode with per-step recomputation. Forward sweep without a graph, storing only
              theta_k (P floats per step). Backward sweep k = N-1 .. 0 with the adjoint
              lambda_k = d loss / d theta_k, starting from lambda_N = 2 (theta_N - theta*) / D,
              D = ||theta_0 - theta*||^2. Per step, rebuild L_k's graph at theta_k, take g_k with
              ``create_graph=True`` and one vector-Jacobian product of g_k with lambda_{k+1}::

                  d loss/d alpha += -<lambda_{k+1}, g_k>
                  d loss/d X     += -alpha * (d g_k / d X)^T lambda_{k+1}
                  d loss/d Y     += -alpha * (d g_k / d Y)^T lambda_{k+1}
                  lambda_k        = lambda_{k+1} - alpha * H_k lambda_{k+1}   (H_k = d g_k / d theta, a
                                                                            Hessian-vector product)

              Only one step's graph is alive at a time: memory is flat in N (plus N x P floats for the
              stored theta_k), time is about one extra forward + backward per step.

Both modes give the same numbers up to round-off (tests check 1e-5 relative in float64).

Determinism of recomputation. Every random choice of a step (which synthetic videos, which frames of
them, which crop box and whether it is mirrored) is drawn once, before the forward sweep, into a
:class:`StepPlan`, and both sweeps read the same plan. The student runs with dropout off (``model.eval()``; MiniC3D-IN uses
GroupNorm, which has no running statistics, so eval and train mode compute the same function
otherwise): each step is a pure function of (theta_k, X, Y, plan). Models with buffers (BatchNorm
running statistics) are rejected.

Augmentation in the inner loop (``augment``, :data:`AUGMENTS`). Image DATM augments the synthetic
batch of every inner step with differentiable siamese augmentation (NUS-HPC-AI-Lab/DATM
``distill/DATM.py`` 520-521, ``DiffAugment``); no video DATM code was released, so vdc applies the
experts' own augmentation (random resized crop + horizontal flip, ``vdc.train.loop.train_batch``),
differentiably:

``crop_flip`` per clip a box (y0, x0, h, w) drawn as torchvision's RandomResizedCrop draws it
              (``vdc.data.clips.sample_resized_crop_boxes``: area scale, aspect ratio) on the S x S
              synthetic frame, resized back to S x S with bilinear interpolation, and mirrored where
              the plan says. Crop + resize + flip is linear in the clip: output = R_y X R_x^T per frame
              and channel, with R_y, R_x [S, S] interpolation matrices (:func:`crop_matrices`: the
              sampling points and weights of ``vdc.data.clips.crop_resize``'s ``grid_sample``,
              ``align_corners=False``, border padding; mirroring reverses the rows of R_x). Two batched
              matmuls: exact in any dtype, deterministic on CUDA, and differentiable to any order
              (``grid_sample``'s input gradient has no deterministic CUDA kernel);
``flip``      the mirror only;
``none``      the clip as it is.

Flips follow the dataset's flip mode: never when it is off; with a label map of mirrored classes (mode
``map``) the targets of a mirrored clip are its label logits with the paired classes' columns swapped
(:class:`InnerLoop` ``label_map``: the clip's logit for class k is its logit for the mirror of k, the
same map the real data's flips apply), differentiable in the logits.

Tensors: synthetic clips ``X`` are [N_syn, 3, T_c, S, S] (normalised network space), ``Y`` are
[N_syn, K] logits, ``alpha`` a 0-d tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from vdc.data.clips import HFlip, condensed_frame_indices, interpolate_time, mirror_targets, sample_resized_crop_boxes

MEMORY_MODES = ("recompute", "naive")
AUGMENTS = ("crop_flip", "flip", "none")


# ----------------------------------------------------------------------------- flat-parameter model

class FlatModel:
    """A network evaluated at a flat parameter vector theta [P] (``torch.func.functional_call``).

    The flat layout is the concatenation of ``model.named_parameters()`` in order, each flattened
    row-major; :attr:`names`, :attr:`shapes` describe it (the experts file uses the same layout).
    """

    def __init__(self, model: torch.nn.Module):
        buffers = [n for n, _ in model.named_buffers()]
        if buffers:
            raise ValueError(f"trajectory matching needs a network without buffers (no BatchNorm running "
                             f"statistics); this one has {buffers[:3]}. Use minic3d_in (GroupNorm) as experts.arch.")
        self.model = model.eval()  # dropout off: every inner step is a pure function (see module doc)
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in model.named_parameters()]
        self.numels = [math.prod(s) for s in self.shapes]

    @property
    def num_params(self) -> int:
        return sum(self.numels)

    def flatten(self, tensors) -> torch.Tensor:
        """Parameter tensors (in :attr:`names` order) -> theta [P]."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.unflatten(theta), (x,))


# ----------------------------------------------------------------------------- one inner step

@dataclass
class StepPlan:
    """The random choices of one inner step, drawn once so that recomputation sees the same batch.

    index [b] synthetic videos of the minibatch; frames [b, T'] frame indices of each one's clip;
    flip [b] which clips are mirrored; boxes [b, 4] crop boxes (y0, x0, h, w) in pixels of the S x S
    synthetic frame, or None (no crop).
    """

    index: torch.Tensor
    frames: torch.Tensor
    flip: torch.Tensor
    boxes: torch.Tensor | None = None


def plan_steps(n_syn: int, steps: int, batch_syn: int, t_c: int, clip_len: int, sampling: str, augment: str,
               generator: torch.Generator, device="cpu", *, size: int | None = None, scale=(0.08, 1.0),
               ratio=(3 / 4, 4 / 3), flip: bool = True) -> list[StepPlan]:
    """Minibatches as DATM draws them (``distill/DATM.py`` 509-514): a random permutation of the
    synthetic set cut into chunks of ``batch_syn``, consumed from the last chunk; a fresh permutation
    when they run out. For each minibatch, in this order: the clip frames
    (:func:`vdc.data.clips.condensed_frame_indices`: naive / segment / sliding), a crop box per clip on
    the ``size`` x ``size`` frame (``sample_resized_crop_boxes(scale, ratio)``; drawn whenever ``size``
    is given, kept when ``augment`` is ``crop_flip``) and a flip bit per clip (p = 0.5; kept unless
    ``augment`` is ``none`` or ``flip`` is False: the dataset's flip mode is off). The draws do not
    depend on ``augment``, so the variants see the same minibatches."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown inner-loop augmentation '{augment}' (one of {', '.join(AUGMENTS)})")
    if augment == "crop_flip" and size is None:
        raise ValueError("plan_steps: augment crop_flip needs the frame size (size=)")
    plans, chunks = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n_syn, generator=generator).split(batch_syn))
        idx = chunks.pop()
        fr = condensed_frame_indices(len(idx), t_c, clip_len, sampling, generator=generator)
        boxes = sample_resized_crop_boxes(len(idx), size, size, scale, ratio, generator) if size else None
        fl = torch.rand(len(idx), generator=generator) < 0.5
        if augment == "none" or not flip:
            fl = torch.zeros_like(fl)
        boxes = boxes.to(device) if augment == "crop_flip" else None
        plans.append(StepPlan(idx.to(device), fr.to(device), fl.to(device), boxes))
    return plans


def crop_matrices(boxes: torch.Tensor, size: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation matrices (R_y, R_x), each [b, size, size], of crop box (y0, x0, h, w) resized to
    ``size`` x ``size`` from a ``size`` x ``size`` frame: row i of R_y holds the bilinear weights of
    output row i, which samples the frame at pixel coordinate c_i = y0 + (i + 0.5) h / size - 0.5
    (clamped to [0, size - 1], border padding): weight 1 - f at floor(c_i), f at floor(c_i) + 1,
    f = c_i - floor(c_i); R_x likewise with x0, w. Exactly what ``vdc.data.clips.crop_resize``'s
    ``grid_sample`` computes (``align_corners=False``)."""
    boxes = boxes.to(dtype)
    pos = (torch.arange(size, device=boxes.device, dtype=dtype) + 0.5) / size

    def matrix(start, length):
        c = (start.unsqueeze(1) + pos * length.unsqueeze(1) - 0.5).clamp(0, size - 1)   # [b, size]
        i0 = c.floor()
        f = (c - i0).unsqueeze(2)
        i0 = i0.long()
        i1 = (i0 + 1).clamp(max=size - 1)
        return (1 - f) * F.one_hot(i0, size).to(dtype) + f * F.one_hot(i1, size).to(dtype)

    return matrix(boxes[:, 0], boxes[:, 2]), matrix(boxes[:, 1], boxes[:, 3])


def crop_view(v: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """Crop box ``boxes[i]`` of every frame of clip i, resized back to the frame size, mirrored where
    ``flip``: v [b, C, T, S, S] -> [b, C, T, S, S], R_y v R_x^T (:func:`crop_matrices`); linear in v."""
    b, s = v.shape[0], v.shape[-1]
    ry, rx = crop_matrices(boxes, s, v.dtype)
    if flip is not None:
        rx = torch.where(flip.view(b, 1, 1), rx.flip(1), rx)
    return ry[:, None, None] @ v @ rx.transpose(1, 2)[:, None, None]


def clip_view(x: torch.Tensor, frames: torch.Tensor, flip: torch.Tensor | None, clip_len: int,
              interpolation: str, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """The clip the network sees from each synthetic video: frames ``frames`` [b, T'] of x [b, 3, T_c, S, S],
    brought to ``clip_len`` frames by ``interpolation`` when shorter (dup / linear), cropped to ``boxes``
    and resized back (:func:`crop_view`) when given, mirrored where ``flip``. Differentiable in x.
    -> [b, 3, clip_len (or T'), S, S]."""
    b = x.shape[0]
    v = x[torch.arange(b, device=x.device).unsqueeze(1), :, frames]      # [b, T', 3, S, S]
    if v.shape[1] < clip_len and interpolation != "none":
        v = interpolate_time(v, clip_len, interpolation).to(x.dtype)     # works on [B, T, ...] layouts
    v = v.transpose(1, 2)                                                # [b, 3, T, S, S]
    if boxes is not None:
        return crop_view(v, boxes, flip)
    if flip is not None:
        v = torch.where(flip.view(b, 1, 1, 1, 1), v.flip(-1), v)
    return v


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """mean_b  -sum_k softmax(target)_bk * log_softmax(logits)_bk   (DATM's SoftCrossEntropy)."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


@dataclass
class InnerLoop:
    """The student's per-step loss L_k(theta; X, Y) for one synthetic set layout. ``label_map`` [K]: the
    class a mirrored clip of class k shows (the dataset's flip mode ``map``), None: flips keep labels."""

    fmodel: FlatModel
    clip_len: int
    interpolation: str = "none"
    label_map: torch.Tensor | None = None
    _flip: HFlip | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        # mode map's flip: keeps the label map's copy on the device the loss runs on (HFlip.map_on)
        self._flip = None if self.label_map is None else HFlip("map", self.label_map)

    def loss(self, theta: torch.Tensor, clips: torch.Tensor, labels: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        """L_k on the whole synthetic set (clips [N_syn, ...], labels [N_syn, K]) indexed by the plan."""
        return self.batch_loss(theta, clips[plan.index], labels[plan.index], plan)

    def batch_loss(self, theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        """L_k on the step's minibatch already gathered: xb [b, 3, T_c, S, S], yb [b, K]."""
        x = clip_view(xb, plan.frames, plan.flip, self.clip_len, self.interpolation, plan.boxes)
        if self._flip is not None:  # a mirrored clip's targets: the paired classes' logits swapped
            yb = mirror_targets(yb, plan.flip, self._flip.map_on(yb.device))
        return soft_cross_entropy(self.fmodel(theta, x), yb)


# ----------------------------------------------------------------------------- loss and gradients

@dataclass
class MatchResult:
    loss: float            # ||theta_N - theta*||^2 / ||theta_0 - theta*||^2
    grad_clips: torch.Tensor
    grad_labels: torch.Tensor
    grad_alpha: torch.Tensor  # 0-d


def match(inner: InnerLoop, theta0: torch.Tensor, target: torch.Tensor, clips: torch.Tensor,
          labels: torch.Tensor, alpha: torch.Tensor, plans: list[StepPlan], memory: str = "recompute") -> MatchResult:
    """The matching loss and its gradient w.r.t. the clips, the label logits and the step size.

    theta0, target: [P] expert snapshots (no gradient); clips [N_syn, 3, T_c, S, S]; labels [N_syn, K];
    alpha 0-d; one inner SGD step per plan. ``memory`` picks the algorithm (module docstring).
    """
    if memory == "naive":
        return _match_naive(inner, theta0, target, clips, labels, alpha, plans)
    if memory == "recompute":
        return _match_recompute(inner, theta0, target, clips, labels, alpha, plans)
    raise ValueError(f"unknown memory mode '{memory}' (one of {', '.join(MEMORY_MODES)})")


def _match_naive(inner, theta0, target, clips, labels, alpha, plans) -> MatchResult:
    c = clips.detach().requires_grad_(True)
    y = labels.detach().requires_grad_(True)
    a = alpha.detach().requires_grad_(True)
    with torch.enable_grad():
        theta = theta0.detach().requires_grad_(True)
        for plan in plans:
            g, = torch.autograd.grad(inner.loss(theta, c, y, plan), theta, create_graph=True)
            theta = theta - a * g
        denom = (theta0 - target).pow(2).sum()
        loss = (theta - target).pow(2).sum() / denom
        gc, gy, ga = torch.autograd.grad(loss, [c, y, a], allow_unused=True)
    gc = torch.zeros_like(c) if gc is None else gc
    gy = torch.zeros_like(y) if gy is None else gy
    ga = torch.zeros_like(a) if ga is None else ga
    return MatchResult(float(loss.detach()), gc.detach(), gy.detach(), ga.detach())


def _match_recompute(inner, theta0, target, clips, labels, alpha, plans) -> MatchResult:
    c0, y0, a = clips.detach(), labels.detach(), alpha.detach()
    # forward sweep: no graph kept, store theta_k only
    thetas = []
    theta = theta0.detach()
    for plan in plans:
        thetas.append(theta)
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            g, = torch.autograd.grad(inner.batch_loss(th, c0[plan.index], y0[plan.index], plan), th)
        theta = theta - a * g
    denom = (theta0 - target).pow(2).sum()
    loss = (theta - target).pow(2).sum() / denom
    lam = 2.0 * (theta - target) / denom          # lambda_N
    del theta
    gc, gy = torch.zeros_like(c0), torch.zeros_like(y0)
    ga = torch.zeros_like(a)
    # backward sweep: rebuild one step's graph at a time; the leaves are the step's minibatch only
    for k in range(len(plans) - 1, -1, -1):
        idx = plans[k].index
        with torch.enable_grad():
            th = thetas[k].detach().requires_grad_(True)
            xb = c0[idx].requires_grad_(True)
            yb = y0[idx].requires_grad_(True)
            g, = torch.autograd.grad(inner.batch_loss(th, xb, yb, plans[k]), th, create_graph=True)
            hv, jx, jy = torch.autograd.grad(g, [th, xb, yb], grad_outputs=lam)
        ga -= torch.dot(lam, g.detach())
        gc.index_add_(0, idx, -a * jx)
        gy.index_add_(0, idx, -a * jy)
        lam = lam - a * hv
        thetas[k] = None  # free as we go
    return MatchResult(float(loss), gc, gy, ga)


# ----------------------------------------------------------------------------- memory accounting

class SavedTensorMeter:
    """Live and peak bytes of the tensors autograd saves for backward inside the ``with`` block
    (``torch.autograd.graph.saved_tensors_hooks``). A saved tensor counts numel * element_size
    from when it is saved until its graph node is freed; :attr:`peak` is the maximum of the live
    total. On the CPU this is the figure that grows with the unrolled graph; on CUDA use
    ``torch.cuda.max_memory_allocated`` as well."""

    def __init__(self):
        self.live = 0
        self.peak = 0
        self.count = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    class _Held:
        __slots__ = ("t", "n", "meter")

        def __init__(self, t, meter):
            self.t, self.n, self.meter = t, t.numel() * t.element_size(), meter
            meter.live += self.n
            meter.count += 1
            meter.peak = max(meter.peak, meter.live)

        def __del__(self):
            self.meter.live -= self.n

    def _pack(self, t):
        return SavedTensorMeter._Held(t, self)

    @staticmethod
    def _unpack(held):
        return held.t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)
