"""Built-in per-step costs of one NVIDIA H200, from ``../shared/brief/gpu-anchors.md`` (measured
2026-11-28 with PyTorch 2.11 and cuDNN autotuning; NOT measured by vdc's own benchmarks).

``python -m vdc plan`` uses them when no bench file is given and ``benchmarks/vdc-costs.json`` does not
exist, so that the paper configs can be estimated on a machine without CUDA. Every entry says where
its figure comes from:

* ``measured``: a row of gpu-anchors.md as it stands (bf16 autocast + channels_last_3d where the
  anchors have it, the vdc default on CUDA);
* ``proxy``: a row of a close relative (torchvision R3D-18 for I3D-R18 and SlowOnly-R18, R(2+1)D-18
  for vdc's R(2+1)D-18, MiniC3D-BN for MiniC3D-IN);
* ``derived``: computed from measured rows by the rule in ``note``;
* ``assumed``: no anchor exists (process start-up, frames loading); a round figure, stated.

Training steps add the anchors' GPU data path (per-clip random resized crop + flip + normalise from
uint8 storage: 3.6 ms per 256 clips) to the bare model step. Replace the whole file by measuring:
``python -m vdc.bench costs --configfile configs/ucf101.yaml --out benchmarks/vdc-costs.json`` on the
GPU (scripts/gpu-check.sh does it).
"""
from __future__ import annotations

import copy

GIB = 2 ** 30
AUG_PER_CLIP = 3.6e-3 / 256  # s: GPU-resident crop + flip + normalise of one clip (gpu-anchors.md)
SOURCE = "gpu-anchors.md (H200, PyTorch 2.11, 2026-11-28): not measured by vdc; see vdc/bench/anchors.py"


def _e(op, arch, size, batch, seconds, origin, note="", peak_gib=None, **extra) -> dict:
    e = {"op": op, "arch": arch, "width": 1.0, "frames": 8, "size": size, "batch": batch, "seconds": seconds,
         "peak_bytes": None if peak_gib is None else peak_gib * GIB, "origin": origin, "note": note}
    e.update(extra)
    return e


def _train(arch, size, batch, bare_s, origin, note=""):
    return _e("train", arch, size, batch, bare_s + AUG_PER_CLIP * batch, origin,
              (note + "; " if note else "") + "bare step + 3.6 ms/256 clips data path")


def _entries() -> list[dict]:
    out = []
    # MiniC3D (and MiniC3D-IN by proxy): train steps, 8x112^2 bf16 (+ channels_last_3d at 100 and 256)
    for arch, origin in (("minic3d", "measured"), ("minic3d_in", "proxy")):
        note = "MiniC3D-BN figures" if arch == "minic3d_in" else ""
        out += [_train(arch, 112, 10, 3.51e-3, origin, note + " bf16"),
                _train(arch, 112, 100, 16.4e-3, origin, note + " bf16 + channels_last_3d"),
                _train(arch, 112, 256, 38.9e-3, origin, note + " bf16 + channels_last_3d"),
                _train(arch, 56, 10, 3.51e-3, "derived", "launch-bound: the 8x112^2 batch-10 step"),
                _train(arch, 56, 256, 15.5e-3, origin, note + " bf16"),
                _e("forward", arch, 112, 1, 1.2e-3, "assumed", "launch floor: a third of the batch-10 train step"),
                _e("forward", arch, 112, 512, 37.8e-3, origin, note + " inference bf16"),
                _e("forward", arch, 56, 1, 1.2e-3, "assumed", "launch floor, as at 112^2"),
                _e("forward", arch, 56, 512, 37.8e-3 / 4, "derived", "the 112^2 inference / 4 (pixels)")]
    # ResNet-18 video networks: torchvision relatives at batch 64, 8x112^2, bf16
    for arch, bare64, name in (("r2plus1d_r18", 104.9e-3, "torchvision R(2+1)D-18"),
                               ("i3d_r18", 55.8e-3, "torchvision R3D-18"),
                               ("slowonly_r18", 55.8e-3, "torchvision R3D-18")):
        out += [_train(arch, 112, 1, 8e-3, "assumed", "launch floor of ~60 layers"),
                _train(arch, 112, 64, bare64, "proxy", f"{name} bf16"),
                _train(arch, 56, 1, 8e-3, "assumed", "launch floor of ~60 layers"),
                _train(arch, 56, 64, bare64 / 4, "derived", f"{name} at 112^2 / 4 (pixels)"),
                _e("forward", arch, 112, 1, 3e-3, "assumed", "launch floor"),
                _e("forward", arch, 112, 64, bare64 / 3, "derived", f"{name} train step / 3 (forward of 3 passes)"),
                _e("forward", arch, 56, 1, 3e-3, "assumed", "launch floor"),
                _e("forward", arch, 56, 64, bare64 / 12, "derived", f"{name} train step / 3 / 4 (pixels)")]
    # EDC: one statistics-matching step, fp32, 101 clips 8x112^2 (400 clips 8x56^2: the same figures)
    for arch, s, gib, name in (("minic3d", 38.6e-3, 2.61, "MiniC3D-BN"), ("i3d_r18", 93.7e-3, 8.46, "R3D-18"),
                               ("slowonly_r18", 93.7e-3, 8.46, "R3D-18"), ("r2plus1d_r18", 186.5e-3, 23.83, "R(2+1)D-18")):
        origin = "measured" if arch in ("minic3d", "r2plus1d_r18") else "proxy"
        out += [_e("edc", arch, 112, 101, s, origin, f"{name} fp32", gib, t_c=16),
                _e("edc", arch, 56, 400, s, origin, f"{name} fp32, 400 clips 8x56^2", gib, t_c=16)]
    # DATM: one outer iteration, MiniC3D-IN, 101 synthetic clips 8x112^2, batch_syn 101, fp32
    for steps, s, gib in ((10, 0.86, 35.7), (20, 1.72, 69.3), (40, 3.44, 136.4)):
        out.append(_e("datm", "minic3d_in", 112, None, s, "measured", "naive unrolled", gib, memory="naive",
                      syn_steps=steps, batch_syn=101))
    for steps, s, gib in ((20, 2.17, 6.1), (40, 4.34, 6.6)):
        out.append(_e("datm", "minic3d_in", 112, None, s, "measured", "per-step recomputation prototype", gib,
                      memory="recompute", syn_steps=steps, batch_syn=101))
    out += [_e("datm", "minic3d_in", 56, None, 1.72, "measured", "naive, 400 clips 8x56^2", 68.6, memory="naive",
               syn_steps=20, batch_syn=400),
            _e("datm", "minic3d_in", 56, None, 1.72 * 1.26, "derived", "naive x 1.26 (the 112^2 recompute/naive ratio)",
               6.1, memory="recompute", syn_steps=20, batch_syn=400)]
    # process start-up and frames loading: no anchor
    out += [{"op": "startup", "seconds": 10.0, "origin": "assumed",
             "note": "python start, import torch + vdc, CUDA context (about 3 s + 2 s + files)"},
            {"op": "load", "bytes_per_s": 2.0e9, "origin": "assumed",
             "note": "frames HDF5 (page cache) to GPU memory, 2 GB/s"},
            {"op": "extract_video", "frames_per_s": 1500.0, "origin": "measured",
             "note": "machine.md: decord decodes 950-2,600 frames/s of 320x240 video per worker (host CPU)"}]
    return out


def anchors_costs() -> dict:
    """The built-in bench file (format vdc-costs-1)."""
    return copy.deepcopy({"format": "vdc-costs-1", "device": "cuda (NVIDIA H200)", "source": SOURCE,
                          "device_memory_bytes": 143771 * 2 ** 20,  # the H200's 143,771 MiB (KINDS.md's nvidia-smi)
                          "entries": _entries()})
