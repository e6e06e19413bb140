"""Model registry: one module per network, registered by name (timm style).

Every model takes float clips [N, 3, T, H, W] (ImageNet-normalised) and returns logits [N, K].
Every model also provides ``forward_features(x) -> [N, D]`` (the pooled embedding before dropout and
the classifier; Herding's features) and ``num_features = D``. ``width`` scales every channel count
(1.0 = the paper's network) so that tiny CPU configurations stay fast.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# THE list of networks: name -> module that registers it (imported on first use, so `import vdc.models`
# stays cheap). The config schema's `arch` enum and the tables' column names are tested against it;
# vdc/fingerprint.py reads it from this file's source to follow a job's networks.
_MODULES = {
    "minic3d": "vdc.models.minic3d",
    "minic3d_in": "vdc.models.minic3d",
    "r2plus1d_r18": "vdc.models.r2plus1d",
    "i3d_r18": "vdc.models.i3d",
    "slowonly_r18": "vdc.models.slowonly",
}
# How the paper's tables name them.
DISPLAY_NAMES = {
    "minic3d": "MiniC3D",
    "minic3d_in": "MiniC3D-IN",
    "r2plus1d_r18": "R(2+1)D",
    "i3d_r18": "I3D",
    "slowonly_r18": "SlowOnly",
}


def register_model(name: str):
    """Decorator registering a model factory ``fn(num_classes, width, dropout)`` under ``name``; a
    second registration of the same name replaces the first with a warning."""
    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            warnings.warn(f"model '{name}' registered twice (by {_REGISTRY[name].__module__} and {fn.__module__}); "
                          f"the later one is used", stacklevel=2)
        _REGISTRY[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_MODULES)


def display_name(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


def create_model(name: str, num_classes: int, width: float = 1.0, dropout: float = 0.5, **kw) -> nn.Module:
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise KeyError(f"unknown model '{name}'; known: {', '.join(list_models())}")
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name](num_classes=num_classes, width=width, dropout=dropout, **kw)


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))
