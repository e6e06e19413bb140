"""The EDC statistics file: per-class BatchNorm-input statistics of a trained network, as the stats
stage writes them (vdc/condense/edc_stats.py, which says how they are computed) and EDC reads them.

Layout of ``results/stats/<dataset>/<arch>.h5``::

    /layers/<module name>/class_mean    float32 [K, C]   mean of per-sample means over (t, h, w)
    /layers/<module name>/class_var     float32 [K, C]   mean of per-sample (biased) variances
    /layers/<module name>/counts        int64   [K]      clips of class k used (n_k)
    /layers/<module name>/running_mean  float32 [C]      the layer's BN running mean (global target)
    /layers/<module name>/running_var   float32 [C]      the layer's BN running variance
    attrs: format ("vdc-edc-stats-1"), arch, num_classes, num_clips (training clips actually used —
           nothing is hard-coded), layers (JSON list of module names, ``named_modules`` order), view,
           clip_len, clip_interval, input_size, frames_file, teacher_file, settings (JSON), vdc_version,
           content_id (hash of everything above: equal files have equal ids; vdc/resume.py ties EDC's
           checkpoints to it)

Mean and variance are written and read under their own names, never by position (the reference
implementation swaps them on reload). The running statistics are stored so that a stale file (a
teacher retrained after the statistics pass) is detected (:func:`check_matches`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch.nn as nn

from vdc import __version__
from vdc.errors import InputError, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher
from vdc.utils import atomic_path

FORMAT = "vdc-edc-stats-1"
ARRAYS = ("class_mean", "class_var", "counts", "running_mean", "running_var")


@dataclass
class LayerStats:
    """Targets of one BatchNorm3d layer (numpy arrays; K classes, C channels)."""

    class_mean: np.ndarray    # [K, C]
    class_var: np.ndarray     # [K, C]
    counts: np.ndarray        # [K]
    running_mean: np.ndarray  # [C]
    running_var: np.ndarray   # [C]


@dataclass
class EDCStats:
    layers: dict[str, LayerStats]   # module name -> targets, in named_modules order
    attrs: dict

    @property
    def num_clips(self) -> int:
        return int(self.attrs["num_clips"])


def bn_layers(net: nn.Module) -> list[tuple[str, nn.BatchNorm3d]]:
    """Every BatchNorm3d of ``net`` as (module name, module), in registration order."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm3d)]


def write_stats(stats: EDCStats, path: str | Path) -> None:
    """Write ``stats`` atomically in the layout of the module docstring."""
    dtypes = {"counts": np.int64}
    ident = ContentHasher()
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            g = h5.create_group("layers")
            for name, ls in stats.layers.items():
                lg = g.create_group(name)
                for key in ARRAYS:
                    a = getattr(ls, key).astype(dtypes.get(key, np.float32))
                    lg[key] = a
                    ident.update(f"{name}/{key}", a)
            attrs = {**stats.attrs, "layers": list(stats.layers), "vdc_version": __version__}
            attrs = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in attrs.items()}
            for key, v in attrs.items():
                h5.attrs[key] = v
            ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
            h5.attrs[CONTENT_ID_ATTR] = ident.hexdigest()


def read_stats(path: str | Path) -> EDCStats:
    """Read a statistics file; every array by its own name (mean is mean, variance is variance)."""
    path = Path(path)
    fix = f"rerun the stats stage (snakemake {path})"
    with open_h5(path, "EDC statistics file", fix) as h5:
        if h5.attrs.get("format") != FORMAT or "layers" not in h5:
            raise InputError(f"{path}: not a vdc EDC statistics file (format {FORMAT}); delete it and {fix}")
        attrs = {}
        for key, v in h5.attrs.items():
            if isinstance(v, str) and v[:1] in "[{":
                v = json.loads(v)
            attrs[key] = v.item() if isinstance(v, np.generic) else v
        layers = {}
        try:
            for name in attrs["layers"]:
                lg = h5["layers"][name]
                layers[name] = LayerStats(**{key: lg[key][:] for key in ARRAYS})
        except KeyError as exc:
            raise InputError(f"{path}: incomplete EDC statistics file ({exc}); delete it and {fix}") from None
    return EDCStats(layers=layers, attrs=attrs)


def check_matches(stats: EDCStats, net: nn.Module, path: str | Path, atol: float = 1e-4) -> None:
    """Raise InputError if ``stats`` were not computed from ``net`` (other BN layers, channels or
    running statistics)."""
    names = [n for n, _ in bn_layers(net)]
    if names != list(stats.layers):
        raise InputError(f"{path}: statistics for layers {list(stats.layers)[:4]}... but the network has "
                         f"{names[:4]}...; rerun the stats stage for this teacher")
    for name, mod in bn_layers(net):
        ls = stats.layers[name]
        same = (ls.running_mean.shape == tuple(mod.running_mean.shape)
                and np.allclose(ls.running_mean, mod.running_mean.detach().cpu().numpy(), atol=atol)
                and np.allclose(ls.running_var, mod.running_var.detach().cpu().numpy(), atol=atol))
        if not same:
            raise InputError(f"{path}: layer {name}: the stored running statistics differ from the teacher's; "
                             f"the teacher was retrained after the statistics pass — rerun the stats stage")
