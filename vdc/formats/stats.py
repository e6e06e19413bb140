"""The EDC statistics file: per-class statistics at the inputs of a trained network's BatchNorm3d and
Conv3d modules, as the stats stage writes them (vdc/condense/edc_stats.py, which says how the pass
sees the data) and EDC reads them (vdc/condense/edc.py). This module also defines *what* a statistic
is (:func:`channel_moments`, :func:`patch_tubes`), so that the pass and the matching use one definition.

Hooked modules (the reference: shaoshitong/EDC ``Branch_full_ImageNet_1k/recover/recover.py`` 78-103
hooks every ``BatchNorm2d`` and every ``Conv2d`` of each teacher, in ``named_modules`` order): every
``nn.BatchNorm3d`` (kind ``bn``) and every ``nn.Conv3d`` (kind ``conv``; the stem's first convolution,
whose input is the normalised clip, the convolutions inside a (2+1)D convolution, the shortcuts).

Statistics of one module input z [B, C, T, H, W] (float32), per sample b:

    m_b[c]  = mean_{t,h,w} z[b, c]          v_b[c]  = var_{t,h,w} z[b, c]  (biased)            [B, C]

and, for a convolution only, over spatial *patches* (``recover/utils.py`` 374-404, 466-501: the
input resized bilinearly to H' x W', the next multiples of PATCH = 16, then cut into PATCH x PATCH
squares; vdc takes each square through all T frames, a tube, as every statistic here pools time):

    pm_b[p] = mean_{c,t,(h,w) in p} z'[b]   pv_b[p] = var_{c,t,(h,w) in p} z'[b]              [B, P]

with P = (H'/16)(W'/16) patches, row-major (``grid`` = (H'/16, W'/16)). Class targets average the
per-sample values within each class k over its n_k clips (the reference's ``pre_hook_fn``):
class_mean[k] = (1/n_k) sum_{b in k} m_b, class_var, class_patch_mean, class_patch_var likewise.
The global targets of a BatchNorm layer are its running statistics (EDC reads them from the network;
the file keeps a copy to detect a retrained teacher). The global targets of a convolution are the
statistics over all N clips of the pass, i.e. over (clip, t, h, w) per channel and over
(clip, c, t, h, w) per patch (law of total variance, every clip having the same number of values):

    mean = (1/N) sum_b m_b       var = (1/N) sum_b (v_b + m_b^2) - mean^2      (patch_* likewise)

The reference instead adds each batch's statistics weighted by batch / 1,281,167 (ImageNet's size,
hard-coded, ``utils.py`` 261, 386-389): the same quantity up to the spread of the batch means, for
ImageNet only. vdc's needs no dataset size and does not depend on the pass's batch size.

Layout of ``results/stats/<dataset>/<arch>.h5``::

    /layers/<module name>            attrs: kind ("bn" | "conv")
        class_mean        float32 [K, C]   class_var        float32 [K, C]   counts  int64 [K]
        bn:    running_mean  float32 [C]   running_var   float32 [C]   (the layer's own, for the check)
        conv:  mean          float32 [C]   var           float32 [C]   (global targets)
               class_patch_mean float32 [K, P]   class_patch_var float32 [K, P]
               patch_mean    float32 [P]   patch_var     float32 [P]   grid int64 [2] (H'/16, W'/16)
    attrs: format ("vdc-edc-stats-2"), arch, num_classes, num_clips (training clips actually used),
           layers (JSON list of module names, ``named_modules`` order), kinds (JSON {name: kind}),
           patch (16), view, clip_len, clip_interval, input_size, seed, frames_file, teacher_file,
           settings (JSON), vdc_version, content_id (hash of everything above: equal files have equal
           ids; vdc/resume.py ties EDC's checkpoints to it)

Every array is written and read under its own name, never by position: the reference's writer
stores the class-level patch mean under ``running_patch_var`` and the variance under
``running_patch_mean`` (``utils.py`` 359-362), so its reload swaps them; vdc's round trip is tested.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.utils.checkpoint

from vdc import __version__
from vdc.errors import InputError, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher
from vdc.utils import atomic_path

FORMAT = "vdc-edc-stats-2"
PATCH = 16
MATCH = ("bn", "bn_conv")


@dataclass
class LayerStats:
    """Targets of one BatchNorm3d layer (numpy arrays; K classes, C channels)."""

    class_mean: np.ndarray    # [K, C]
    class_var: np.ndarray     # [K, C]
    counts: np.ndarray        # [K]
    running_mean: np.ndarray  # [C]
    running_var: np.ndarray   # [C]
    kind = "bn"
    ARRAYS = ("class_mean", "class_var", "counts", "running_mean", "running_var")


@dataclass
class ConvStats:
    """Targets of one Conv3d input (numpy arrays; K classes, C channels, P patches)."""

    class_mean: np.ndarray        # [K, C]
    class_var: np.ndarray         # [K, C]
    counts: np.ndarray            # [K]
    mean: np.ndarray              # [C]   global targets
    var: np.ndarray               # [C]
    class_patch_mean: np.ndarray  # [K, P]
    class_patch_var: np.ndarray   # [K, P]
    patch_mean: np.ndarray        # [P]
    patch_var: np.ndarray         # [P]
    grid: np.ndarray              # [2]   patches down, patches across
    kind = "conv"
    ARRAYS = ("class_mean", "class_var", "counts", "mean", "var", "class_patch_mean", "class_patch_var",
              "patch_mean", "patch_var", "grid")


KINDS = {"bn": LayerStats, "conv": ConvStats}


@dataclass
class EDCStats:
    layers: dict[str, LayerStats | ConvStats]   # module name -> targets, in named_modules order
    attrs: dict

    @property
    def num_clips(self) -> int:
        return int(self.attrs["num_clips"])


# ----------------------------------------------------------------------------- modules and statistics

def bn_layers(net: nn.Module) -> list[tuple[str, nn.BatchNorm3d]]:
    """Every BatchNorm3d of ``net`` as (module name, module), in registration order."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm3d)]


def hooked_modules(net: nn.Module, match: str = "bn_conv") -> list[tuple[str, nn.Module, str]]:
    """The modules whose inputs EDC matches, as (name, module, kind), in ``named_modules`` order (the
    reference's order, whose first entry takes the ×10): every BatchNorm3d (``match: bn``), plus every
    Conv3d (``match: bn_conv``, the reference's)."""
    if match not in MATCH:
        raise ValueError(f"match_modules must be one of {', '.join(MATCH)}, got '{match}'")
    out = []
    for n, m in net.named_modules():
        if isinstance(m, nn.BatchNorm3d):
            out.append((n, m, "bn"))
        elif isinstance(m, nn.Conv3d) and match == "bn_conv":
            out.append((n, m, "conv"))
    return out


def channel_moments(z: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel of z [B, C, T, H, W]: over (t, h, w) per sample -> [B, C]
    (``per_sample``), or over (b, t, h, w) -> [C]."""
    dims = (2, 3, 4) if per_sample else (0, 2, 3, 4)
    return z.mean(dim=dims), z.var(dim=dims, unbiased=False)


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """The [n_out, n_in] matrix of 1-D linear interpolation as ``F.interpolate(mode="bilinear",
    align_corners=False)`` computes it: output i samples the input at s = (i + 0.5) n_in / n_out - 0.5,
    clamped at 0, with weights 1 - (s - floor s) and s - floor s on floor s and floor s + 1 (the last
    index repeated at the border)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = src - i0
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    a.index_put_((rows, i0), 1 - lam, accumulate=True)
    a.index_put_((rows, i1), lam, accumulate=True)
    return a.float().to(device)


def patch_tubes(z: torch.Tensor) -> torch.Tensor:
    """z [B, C, T, H, W] resized bilinearly (``align_corners=False``, ``F.interpolate``'s default in the
    reference) to the next multiples of PATCH in H and W, as [B, C, T, U, PATCH, V, PATCH] (U x V
    patches). The resize is two matrix products (:func:`resize_matrix`), whose backward is deterministic
    on the GPU (``F.interpolate``'s is not); sizes already multiples of PATCH are used as they are."""
    b, c, t, h, w = z.shape
    u, v = -(-h // PATCH), -(-w // PATCH)
    if (u * PATCH, v * PATCH) != (h, w):   # along W, then along H: one matrix product each
        z = z @ resize_matrix(w, v * PATCH, z.device).T
        z = (z.transpose(-1, -2) @ resize_matrix(h, u * PATCH, z.device).T).transpose(-1, -2)
    return z.reshape(b, c, t, u, PATCH, v, PATCH)


def _patch_moments(z: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    tubes = patch_tubes(z)                                              # [B, C, T, U, 16, V, 16]
    b, u, v = tubes.shape[0], tubes.shape[3], tubes.shape[5]
    if per_sample:   # one contiguous row per (sample, patch): a faster reduction than over strided dims
        rows = tubes.permute(0, 3, 5, 1, 2, 4, 6).reshape(b, u * v, -1)
        var, mean = torch.var_mean(rows, dim=2, unbiased=False)
    else:
        rows = tubes.permute(3, 5, 0, 1, 2, 4, 6).reshape(u * v, -1)
        var, mean = torch.var_mean(rows, dim=1, unbiased=False)
    return mean, var


def patch_moments(z: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Mean and biased variance of every patch tube of z [B, C, T, H, W] (:func:`patch_tubes`): over
    (c, t, h, w in p) per sample -> [B, P] (``per_sample``), or over (b, c, t, h, w in p) -> [P];
    plus the grid (U, V), P = U·V, row-major. When z is resized and needs a gradient, the resized tensor
    is recomputed in the backward instead of kept (``torch.utils.checkpoint``): a 4 x 4 feature map
    resized to 16 x 16 would otherwise keep 16 times its memory until the backward."""
    grid = (-(-z.shape[3] // PATCH), -(-z.shape[4] // PATCH))
    resized = (grid[0] * PATCH, grid[1] * PATCH) != tuple(z.shape[3:])
    if resized and z.requires_grad and torch.is_grad_enabled():
        m, v = torch.utils.checkpoint.checkpoint(_patch_moments, z, per_sample, use_reentrant=False)
    else:
        m, v = _patch_moments(z, per_sample)
    return m, v, grid


# ----------------------------------------------------------------------------- file

def write_stats(stats: EDCStats, path: str | Path) -> None:
    """Write ``stats`` atomically in the layout of the module docstring."""
    ident = ContentHasher()
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            g = h5.create_group("layers")
            for name, ls in stats.layers.items():
                lg = g.create_group(name)
                lg.attrs["kind"] = ls.kind
                ident.update_text(f"{name}/kind", ls.kind)
                for key in ls.ARRAYS:
                    dtype = np.int64 if key in ("counts", "grid") else np.float32
                    a = np.asarray(getattr(ls, key)).astype(dtype)
                    lg[key] = a
                    ident.update(f"{name}/{key}", a)
            attrs = {**stats.attrs, "layers": list(stats.layers), "kinds": {n: ls.kind for n, ls in stats.layers.items()},
                     "patch": PATCH, "vdc_version": __version__}
            attrs = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in attrs.items()}
            for key, v in attrs.items():
                h5.attrs[key] = v
            ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
            h5.attrs[CONTENT_ID_ATTR] = ident.hexdigest()


def read_stats(path: str | Path) -> EDCStats:
    """Read a statistics file; every array by its own name (a mean is a mean, a variance a variance)."""
    path = Path(path)
    fix = f"rerun the stats stage (snakemake {path})"
    with open_h5(path, "EDC statistics file", fix) as h5:
        if h5.attrs.get("format") != FORMAT or "layers" not in h5:
            raise InputError(f"{path}: not a vdc EDC statistics file of format {FORMAT} (an older vdc wrote "
                             f"BatchNorm statistics only); delete it and {fix}")
        attrs = {}
        for key, v in h5.attrs.items():
            if isinstance(v, str) and v[:1] in "[{":
                v = json.loads(v)
            attrs[key] = v.item() if isinstance(v, np.generic) else v
        layers = {}
        try:
            for name in attrs["layers"]:
                lg = h5["layers"][name]
                cls = KINDS[lg.attrs["kind"]]
                layers[name] = cls(**{key: lg[key][:] for key in cls.ARRAYS})
        except KeyError as exc:
            raise InputError(f"{path}: incomplete EDC statistics file ({exc}); delete it and {fix}") from None
    return EDCStats(layers=layers, attrs=attrs)


def check_matches(stats: EDCStats, net: nn.Module, path: str | Path, atol: float = 1e-4) -> None:
    """Raise InputError if ``stats`` were not computed from ``net``: other modules (names, kinds or
    channels), or BatchNorm running statistics that differ (the teacher was retrained after the pass)."""
    mods = hooked_modules(net, "bn_conv")
    have = [(n, ls.kind) for n, ls in stats.layers.items()]
    if [(n, k) for n, _, k in mods] != have:
        raise InputError(f"{path}: statistics for modules {[n for n, _ in have][:4]}... but the network has "
                         f"{[n for n, _, _ in mods][:4]}...; rerun the stats stage for this teacher")
    for name, mod, kind in mods:
        ls = stats.layers[name]
        if kind == "conv":
            if ls.class_mean.shape[1] != mod.in_channels:
                raise InputError(f"{path}: module {name}: statistics of {ls.class_mean.shape[1]} channels, the "
                                 f"network's convolution takes {mod.in_channels}; rerun the stats stage")
            continue
        same = (ls.running_mean.shape == tuple(mod.running_mean.shape)
                and np.allclose(ls.running_mean, mod.running_mean.detach().cpu().numpy(), atol=atol)
                and np.allclose(ls.running_var, mod.running_var.detach().cpu().numpy(), atol=atol))
        if not same:
            raise InputError(f"{path}: layer {name}: the stored running statistics differ from the teacher's; "
                             f"the teacher was retrained after the statistics pass — rerun the stats stage")
