"""GPU fast paths, switched by the config's ``performance`` section; no-ops on the CPU.

Every training and inference loop of vdc runs the same code on every device and asks one
:class:`Accel` object (built from the job's settings and device) for three things:

* ``accel.autocast()`` - the context of the forward passes: ``torch.autocast(cuda, bfloat16)`` when
  ``performance.bf16`` and the device is CUDA, else a null context. Logits leave it as bfloat16 on
  CUDA; callers compute losses on ``logits.float()`` (a no-op on float32 tensors), so losses,
  gradients of float32 parameters and optimiser state stay float32 (bf16 needs no loss scaling);
* ``accel.prepare(model)`` - the network in ``torch.channels_last_3d`` memory format when
  ``performance.channels_last_3d`` and the device is CUDA (cuDNN's fast NDHWC kernels), or on the CPU
  when ``performance.cpu_channels_last_3d`` (oneDNN's NDHWC convolutions: a toy MiniC3D training step
  at batch 10, 8x48², width 1/8, takes 38 ms instead of 60 ms on this project's 2-core CPU; the
  results differ from the contiguous path by float rounding only and stay deterministic), else the
  model unchanged;
* ``accel.adamw(groups, ...)`` / ``accel.sgd(params, ...)`` - the optimiser: vdc's own
  :class:`vdc.train.loop.AdamW` (torch's functional adam kernel) or ``torch.optim.SGD``, with
  ``fused=True`` on CUDA when ``performance.fused_optimizer`` (one kernel for all parameters), else
  exactly today's single-tensor kernels.

On the CPU all three return the float32, single-tensor path whatever the GPU switches say, so CPU
results never depend on them (tests/test_accel.py checks bit equality); only
``cpu_channels_last_3d`` (off by default; the toy config turns it on for speed) changes the CPU path. :func:`setup_backends` applies the process-wide switches once per job: on CUDA, TF32
convolutions and matmuls (``performance.tf32``) and, when ``deterministic: false``, cuDNN autotuning
(``torch.backends.cudnn.benchmark``); ``deterministic: true`` keeps
``vdc.utils.seed_everything``'s deterministic algorithms and no autotuning.

DATM's trajectory gradient stays float32 unless ``performance.datm_bf16`` is set: the gradient is
ill-conditioned on the GPU (gpu-anchors.md); ``python -m vdc.bench datm --agreement`` measures how far
a bf16 gradient is from the float32 one before anyone turns that on. :meth:`Accel.for_datm` gives the
Accel the trajectory code should use.

Settings (``settings["performance"]``, filled by the schema; defaults in parentheses): bf16 (true),
channels_last_3d (true), fused_optimizer (true), tf32 (true), datm_bf16 (false). Benchmarks build an
``Accel(device, bf16=..., channels_last=..., fused=...)`` directly to compare the variants.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

log = logging.getLogger("vdc.accel")


@dataclass(frozen=True)
class Accel:
    """The fast paths in effect for one job on one device (every flag False on the CPU)."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    fused: bool = False
    datm_bf16: bool = False

    @classmethod
    def from_settings(cls, settings: dict, device: torch.device | str) -> "Accel":
        """The Accel of a job: its ``performance`` section on CUDA, nothing on any other device."""
        device = torch.device(device)
        perf = settings["performance"]
        if device.type != "cuda":  # the CPU: float32, single-tensor optimiser; channels_last only if asked
            return cls(device, channels_last=bool(perf["cpu_channels_last_3d"]))
        return cls(device, bf16=bool(perf["bf16"]), channels_last=bool(perf["channels_last_3d"]),
                   fused=bool(perf["fused_optimizer"]), datm_bf16=bool(perf["datm_bf16"]))

    # -------------------------------------------------------------------------------- forward
    def autocast(self):
        """Context of a forward pass: bf16 autocast on CUDA when enabled, else a null context."""
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def for_datm(self) -> "Accel":
        """The Accel of DATM's trajectory gradient: bf16 only when ``performance.datm_bf16``."""
        return replace(self, bf16=self.datm_bf16)

    # -------------------------------------------------------------------------------- models
    def prepare(self, model: nn.Module) -> nn.Module:
        """The model in channels_last_3d memory format when enabled (in place; returns it)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        return model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A network input [N, C, T, H, W] in the memory format the prepared model prefers."""
        if self.channels_last and x.dim() == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    # -------------------------------------------------------------------------------- optimisers
    def adamw(self, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        """vdc's AdamW (vdc.train.loop.AdamW) with the fused kernel on CUDA when enabled."""
        from vdc.train.loop import AdamW

        return AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=self.fused)

    def sgd(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.SGD:
        """torch.optim.SGD, fused on CUDA when enabled (else torch's default kernel choice)."""
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **({"fused": True} if self.fused else {}))

    # -------------------------------------------------------------------------------- reporting
    def describe(self) -> str:
        if self.device.type != "cuda":
            layout = "channels_last_3d" if self.channels_last else "contiguous"
            return (f"{self.device.type}: float32, {layout}, single-tensor optimiser (the GPU performance switches "
                    f"apply on CUDA only)")
        on = [name for name, flag in (("bf16 autocast", self.bf16), ("channels_last_3d", self.channels_last),
                                      ("fused optimiser", self.fused)) if flag]
        bench = torch.backends.cudnn.benchmark
        tf32 = torch.backends.cudnn.allow_tf32
        return (f"cuda: {', '.join(on) or 'no fast path'}; cudnn.benchmark {bench}, TF32 {tf32}; DATM gradient "
                f"{'bf16' if self.datm_bf16 else 'float32'}")


def setup_backends(settings: dict, device: torch.device | str) -> Accel:
    """Apply the process-wide switches of a job and return its :class:`Accel` (log one line).

    Call after ``vdc.utils.seed_everything(seed, settings["deterministic"])``. On CUDA: TF32 for
    convolutions and matmuls as ``performance.tf32`` says; ``deterministic: false`` turns cuDNN
    autotuning on (``deterministic: true`` leaves it off). Nothing changes on the CPU."""
    accel = Accel.from_settings(settings, device)
    if accel.device.type == "cuda":
        perf = settings["performance"]
        torch.backends.cuda.matmul.allow_tf32 = bool(perf["tf32"])
        torch.backends.cudnn.allow_tf32 = bool(perf["tf32"])
        if not settings["deterministic"]:
            torch.backends.cudnn.benchmark = True
    log.info("fast paths: %s", accel.describe())
    return accel
