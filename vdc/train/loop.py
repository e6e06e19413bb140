"""Pieces shared by the training loops (teacher, experts, evaluation students): batches of real clips,
the test pass, optimiser parameter groups and the AdamW step.

Randomness in a loop comes from two sources only: one explicit CPU ``torch.Generator`` (clip windows,
crops, flips, shuffling, CutMix) and the global torch RNG (dropout, and anything a module draws).
Both are saved in every checkpoint (vdc/resume.py), so a resumed run continues exactly as an
uninterrupted one.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vdc.accel import Accel
from vdc.data import clips as C
from vdc.data.frames import VideoBank


# ----------------------------------------------------------------------------- data

def train_views(bank: VideoBank, videos: torch.Tensor, dataset: dict, generator: torch.Generator, hflip: C.HFlip,
                scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Training views of real videos and their labels: the reference's random window of clip_len
    frames at clip_interval source frames (clips.train_frame_indices), one random resized crop + the
    dataset's flip per clip (same for all its frames; clips.crop_flip), normalised; the label of a
    flipped clip follows ``hflip`` (clips.HFlip: mode map). ``augment=False``: the centre crop instead
    (no crop/flip draws; the window is still random).
    videos [B] (bank positions, on the bank's device) -> (float [B, 3, clip_len, S, S], long [B])."""
    idx = C.train_frame_indices(bank.lengths[videos], dataset["clip_len"], dataset["clip_interval"], generator)
    raw = bank.gather(videos, idx)
    y = bank.labels[videos]
    if not augment:
        return C.normalize(C.center_crop(raw, dataset["input_size"])), y
    x, flipped = C.crop_flip(raw, dataset["input_size"], scale, ratio, hflip, generator)
    return C.normalize(x), hflip.labels(y, flipped)


def train_batch(bank: VideoBank, videos: torch.Tensor, dataset: dict, generator: torch.Generator,
                scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), augment: bool = True,
                hflip: C.HFlip | None = None) -> torch.Tensor:
    """The views of :func:`train_views` alone, for callers whose labels do not depend on the flip:
    ``hflip`` None = mode on, the only choice for a dataset section without ``hflip`` (benchmarks).
    A flip that maps labels is refused here (the labels would be wrong): use train_views."""
    hflip = hflip or C.HFlip("on")
    wanted = C.flip_mode(dataset.get("hflip", "on"))  # hand-built dataset dicts (benchmarks) have no hflip key
    if hflip.maps or wanted != hflip.mode:
        raise ValueError(f"train_batch with hflip '{hflip.mode}' for a dataset whose hflip is '{wanted}': use "
                         f"train_views(..., clips.HFlip.of(dataset, classes)), which also returns the labels")
    return train_views(bank, videos, dataset, generator, hflip, scale, ratio, augment)[0]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k logits, for each k (k capped at K): a long tensor
    [len(ks)] on the logits' device (no host sync)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels.unsqueeze(1)
    return torch.stack([hit[:, :k].any(1).sum() for k in ks])


class TestClips:
    """The test view of every video of a bank, prepared once: uint8 [N, 3, T, S, S] (centre window,
    centre crop, pixels rounded to 1/255 - exact unless the frames are smaller than S) + labels [N],
    on the bank's device. Repeated test passes then cost only the network's forward."""

    def __init__(self, bank: VideoBank, dataset: dict, batch: int = 256):
        device = bank.labels.device
        n = len(bank)
        parts = []
        for i in range(0, n, batch):
            videos = torch.arange(i, min(i + batch, n), device=device)
            idx = C.center_frame_indices(bank.lengths[videos], dataset["clip_len"], dataset["clip_interval"])
            x = C.center_crop(bank.gather(videos, idx), dataset["input_size"])
            parts.append((x * 255).round_().to(torch.uint8))
        s = int(dataset["input_size"])
        self.clips = torch.cat(parts) if parts else torch.zeros(0, 3, dataset["clip_len"], s, s, dtype=torch.uint8)
        self.labels = bank.labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, i: int, j: int) -> torch.Tensor:
        """Network input of test videos i..j-1: float [j - i, 3, T, S, S], normalised."""
        return C.normalize(self.clips[i:j].float().div_(255))


@torch.no_grad()
def test_accuracy(model: nn.Module, test: TestClips, batch: int = 100, accel=None) -> dict:
    """Top-1 / top-5 accuracy (percent) of ``model`` on every test video (one centre clip x one centre
    crop each), in batches of ``batch``, the forward under ``accel.autocast()`` (vdc/accel.py; None:
    float32). Hits are counted on the device and read once at the end (one host sync per pass).
    Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    accel = accel or Accel(test.labels.device)
    n = len(test)
    hits = torch.zeros(2, dtype=torch.long, device=test.labels.device)
    for i in range(0, n, batch):
        x = test.batch(i, min(i + batch, n))
        with accel.autocast():
            logits = model(accel.input(x))
        hits += topk_correct(logits.float(), test.labels[i:i + batch])
    model.train(was_training)
    c1, c5 = hits.tolist()
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1)}


# ----------------------------------------------------------------------------- optimisation

def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW/SGD parameter groups: weight decay on weights with >= 2 dims (conv / linear kernels),
    none on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


class AdamW:
    """AdamW over parameter groups that steps with torch.optim's own functional kernel
    (``torch.optim.adam.adam`` with decoupled weight decay, exactly what ``torch.optim.AdamW.step``
    runs), without the ``torch.optim.Optimizer`` class: its ``step()`` imports ``torch._dynamo`` on
    first use, 2-3 s per process on a 2-core CPU, paid by each of the ~100 evaluation jobs of a study
    (vdc never compiles). Same update, same numbers, same state layout (exp_avg, exp_avg_sq, step);
    ``tests/test_evaluate.py`` checks it against torch.optim.AdamW.
    """

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, fused: bool = False):
        self.fused = bool(fused)  # torch's fused multi-tensor kernel (CUDA; vdc/accel.py); else single-tensor
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, **g,
                              "params": list(g["params"])} for g in groups]
        self.state: dict[int, dict] = {}  # keyed by the parameter's position across the groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        from torch.optim.adam import adam

        i = 0
        for g in self.param_groups:
            params, grads, m, v, steps = [], [], [], [], []
            for p in g["params"]:
                i += 1
                if p.grad is None:
                    continue
                st = self.state.get(i - 1)
                if st is None:  # the fused kernel keeps the step count on the parameter's device
                    st = self.state[i - 1] = {"step": torch.tensor(0.0, device=p.device if self.fused else "cpu"),
                                              "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                params.append(p), grads.append(p.grad), m.append(st["exp_avg"])
                v.append(st["exp_avg_sq"]), steps.append(st["step"])
            if params:
                adam(params, grads, m, v, [], steps, foreach=False, fused=self.fused or None,
                     decoupled_weight_decay=True, amsgrad=False,
                     beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"], weight_decay=g["weight_decay"],
                     eps=g["eps"], maximize=False)

    def state_dict(self) -> dict:
        return {"state": self.state, "lrs": [g["lr"] for g in self.param_groups]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore a state_dict (possibly loaded on the CPU): moments go to their parameter's device,
        the step count too under the fused kernel (else it stays on the CPU)."""
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = {}
        for k, v in sd["state"].items():
            p = params[int(k)]
            self.state[int(k)] = {"step": v["step"].to(p.device if self.fused else "cpu"),
                                  "exp_avg": v["exp_avg"].to(p.device), "exp_avg_sq": v["exp_avg_sq"].to(p.device)}
        for g, lr in zip(self.param_groups, sd["lrs"]):
            g["lr"] = lr


# ----------------------------------------------------------------------------- reporting

def device_name(device: torch.device) -> str:
    """The device as recorded in results, e.g. "cuda (NVIDIA H200)" or "cpu (2 threads)"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
