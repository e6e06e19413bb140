"""The evaluate stage: train a fresh student on a condensed set under the unified protocol, test it.

Protocol (study.md section 4; every value from ``settings["evaluate"]``):

* student: ``create_model(arch, K, width, dropout)`` with PyTorch's default initialisation after
  ``seed_everything(seed)``; AdamW(lr 1e-3, betas (0.9, 0.999)), weight decay 0.01 on parameters with
  >= 2 dims only;
* E epochs (300), lr x f(e) during epoch e with the quarter cosine f(e) = 0.5 * (1 + cos(pi * e / (2E)))
  (f(0) = 1, f(E/2) = 0.854, f(E-1) ~ 0.5);
* batch = base_batch x IPC (IPC from the set's attrs; IPC 0, every training clip, counts as the mean
  class size), iterations per epoch = ceil(N / batch), the set
  reshuffled every epoch;
* the student's input, per clip: the condensed video's clip (temporal sampling naive / segment / sliding
  and interpolation none / dup / linear from the set's attrs ``t_c, sampling, interpolation``), one
  RandomResizedCrop(scale, ratio) + the dataset's horizontal flip (``hflip``: off / on / map) for all
  its frames, to input_size, normalised; with soft labels and ``soft_augment: batch`` (the default) the
  crop and flip are drawn once per batch and shared by its clips, as the reference's soft-label
  training applies torchvision's transforms to the whole batch tensor (Video-DC val.py ``train``);
  with ``cutmix``, CutMix (Beta(alpha, alpha), one box per batch) with probability ``cutmix_prob``;
* labels / targets t (logits, [B, K]):
    hard    - none (CE on the class ids; with hflip map a flipped clip of a mirrored class takes the
              paired class, here and for the CE part of MSE-GT);
    soft    - the labeler's logits on each condensed clip's un-augmented view (centre window, centre
              crop), computed once; a set with its own ``label_logits`` (DATM) uses those instead;
              under CutMix the targets are mixed: t = lam * t + (1 - lam) * t[perm]; with hflip map the
              columns of each mirrored pair are swapped in the rows of flipped clips (clips.HFlip.targets);
    multisl - the labeler relabels the exact (augmented, cut-mixed) tensor the student sees, every
              iteration (a flipped view is relabelled as it is: no mapping);
* losses (s = student logits [B, K], y = class ids; under CutMix CE(s, y) means
  lam * CE(s, y) + (1 - lam) * CE(s, y[perm])):
    ce      - CE(s, y)                                         (hard labels only)
    msegt   - mean over B x K of (s - t)^2 + lambda * CE(s, y)  (raw logits, lambda = mse_gt_lambda 0.1)
    kl      - KL(softmax(t / tau) || softmax(s / tau)), mean over the batch (tau = temperature, 1), as the
              reference computes it (Video-DC val.py: KLDivLoss(batchmean), no tau^2); ``kl_tau_squared``
              multiplies it by tau^2 (Hinton et al.: gradients comparable across tau);
* test: every test video once, centre 8-frame window x centre crop (prepared once, ``loop.TestClips``),
  batches of test_batch;
* on CUDA the fast paths of ``settings["performance"]`` (vdc/accel.py): student and labeler forwards
  (training, soft targets, test passes) under bf16 autocast with losses on float32 logits,
  channels_last_3d networks, fused AdamW; on the CPU none, whatever the settings say. The epoch's loss
  is summed on the device and read once per epoch.

Test accuracy is recorded at the final epoch (the main number), every ``test_every`` epochs (the JSON's
``tests``: the learning curve) and at the *late epochs* (``late``): the
reference's 209, 219, ..., 299 for E = 300; for other E, epoch e (0-based) of the reference maps to
round((e + 1) * E / 300) - 1 (E = 30: 20, 21, ..., 29), duplicates dropped; ``late_epochs`` overrides.
``best_late`` is the late epoch with the highest accuracy in the dataset's metric (top1 or top5;
the earliest on ties) - the reference's model selection on the test split, kept for comparison only.

Resumable (vdc/resume.py): every ``checkpoint_every`` epochs ``<workdir>/evaluate/<job>/last.pt``
(model, optimiser, RNG states, curve, late results), tied to the settings, the contents of the
condensed set, frames and labeler files, and the code; removed when the JSON is written.

Refused inputs (an error, no JSON): an empty test split, a condensed set with non-finite clips or
label logits, a non-finite loss during training.

Output JSON (docs/design.md): dataset, method, ipc, temporal, seed, arch, labels, loss, cutmix
("cutmix" / "nocutmix", as in the file name), top1, top5, best_late {top1, top5, epoch},
late [{epoch, top1, top5}], curve [{epoch, loss, lr}], wall_time_s, device, num_clips, settings,
condensed_file, vdc_version; also batch, iters_per_epoch, num_test, soft_source.
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vdc import __version__
from vdc.accel import Accel, setup_backends
from vdc.cli import add_settings_arguments, resolve_settings
from vdc.condensed import ALL_CLIPS, CondensedSet
from vdc.data import clips as C
from vdc.data.frames import Frames, load_bank
from vdc.errors import ConfigError, InputError, NonFiniteError, check_finite
from vdc.fingerprint import job_code
from vdc.formats.teacher import load_teacher
from vdc.models import create_model
from vdc.progress import Progress
from vdc.resume import Checkpoint, job_dir, job_identity, rng_state, set_rng_state
from vdc.train import loop
from vdc.utils import get_device, seed_everything, write_json

log = logging.getLogger("vdc.evaluate")

VALID_LOSSES = {"hard": {"ce"}, "soft": {"msegt", "kl"}, "multisl": {"msegt", "kl"}}


# ----------------------------------------------------------------------------- schedule and losses

def schedule_factor(epoch: int, epochs: int) -> float:
    """Quarter cosine: 0.5 * (1 + cos(pi * epoch / (2 * epochs)))."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / (2 * epochs)))


def late_epochs(epochs: int, override: list[int] | None = None) -> list[int]:
    """Epochs (0-based) at which the test accuracy is recorded besides the last (see module doc)."""
    if override:
        return sorted({e for e in override if 0 <= e < epochs} | {epochs - 1})
    ref = range(209, 300, 10)
    return sorted({max(0, round((e + 1) * epochs / 300) - 1) for e in ref})


def hard_ce(s: torch.Tensor, y: torch.Tensor, perm: torch.Tensor | None = None, lam: float = 1.0) -> torch.Tensor:
    """CE(s, y), or lam * CE(s, y) + (1 - lam) * CE(s, y[perm]) for a cut-mixed batch."""
    loss = F.cross_entropy(s, y)
    if perm is not None:
        loss = lam * loss + (1 - lam) * F.cross_entropy(s, y[perm])
    return loss


def msegt_loss(s: torch.Tensor, t: torch.Tensor, ce: torch.Tensor, lam_gt: float) -> torch.Tensor:
    """MSE-GT: mean over batch x classes of (s - t)^2, plus lam_gt times the hard-label CE ``ce``."""
    return (s - t).square().mean() + lam_gt * ce


def kl_loss(s: torch.Tensor, t: torch.Tensor, tau: float, tau_squared: bool = False) -> torch.Tensor:
    """KL(softmax(t / tau) || softmax(s / tau)) averaged over the batch (sum over classes / B), times
    tau^2 when ``tau_squared``."""
    kl = F.kl_div(F.log_softmax(s / tau, dim=1), F.log_softmax(t / tau, dim=1), reduction="batchmean",
                  log_target=True)
    return kl * (tau * tau) if tau_squared else kl


# ----------------------------------------------------------------------------- the condensed data

class CondensedClips:
    """A condensed set on the device and the views of it the student and the labeler see.

    clips: [N, T_c, H, W, 3], uint8 (0..255) or float32 (unit range); labels [N].
    """

    def __init__(self, cset: CondensedSet, dataset: dict, scale, ratio, device, hflip: C.HFlip | None = None,
                 shared_augment: bool = False):
        a = cset.attrs
        self.t_c = int(a.get("t_c", cset.clips.shape[1]))
        self.sampling = a.get("sampling", "naive")
        self.interpolation = a.get("interpolation", "none")
        if cset.clips.dtype == "uint8":
            self.clips = torch.from_numpy(cset.clips).to(device)
        else:
            self.clips = torch.from_numpy(cset.clips).to(device, torch.float32)
        self.labels = torch.as_tensor(cset.labels, dtype=torch.long, device=device)
        self.clip_len, self.size = int(dataset["clip_len"]), int(dataset["input_size"])
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.hflip = hflip or C.HFlip("on")  # the dataset's flip (clips.HFlip.of); None: on
        self.shared_augment = shared_augment  # one crop + flip per batch (the reference's soft-label training)

    def __len__(self) -> int:
        return len(self.labels)

    def _temporal(self, idx: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        x = self.clips[idx.unsqueeze(1), frame_idx]  # [B, T', H, W, 3]
        return C.interpolate_time(x, self.clip_len, self.interpolation)

    def train_views(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented student input for clips ``idx`` [B] and which were flipped:
        (float [B, 3, T, S, S] normalised, bool [B])."""
        fi = C.condensed_frame_indices(len(idx), self.t_c, self.clip_len, self.sampling, generator, idx.device)
        x, flipped = C.crop_flip(self._temporal(idx, fi), self.size, self.scale, self.ratio, self.hflip, generator,
                                 shared=self.shared_augment)
        return C.normalize(x), flipped

    def train_view(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The views of :meth:`train_views` alone."""
        return self.train_views(idx, generator)[0]

    def plain_view(self, idx: torch.Tensor) -> torch.Tensor:
        """Un-augmented view (soft labels): the centre window (centre segment for segment sampling),
        centre crop. float [B, 3, T, S, S], normalised."""
        if self.sampling == "naive" or self.t_c <= self.clip_len:
            start = 0
        elif self.sampling == "segment":
            start = (self.t_c // self.clip_len - 1) // 2 * self.clip_len
        else:
            start = (self.t_c - self.clip_len) // 2
        n = self.t_c if (self.sampling == "naive" or self.t_c <= self.clip_len) else self.clip_len
        fi = (start + torch.arange(n, device=idx.device)).expand(len(idx), n)
        return C.normalize(C.center_crop(self._temporal(idx, fi), self.size))


# ----------------------------------------------------------------------------- one training step

class Protocol:
    """The student's training step under the protocol (also what ``vdc.bench protocol`` times).

    ``soft`` [N, K]: fixed target logits (soft labels), or None; ``labeler``: the network that
    relabels every view (Multi-SL), or None.
    """

    def __init__(self, student: nn.Module, optimizer, data: CondensedClips, ev: dict,
                 labeler: nn.Module | None = None, soft: torch.Tensor | None = None, accel: Accel | None = None):
        self.student, self.opt, self.data, self.ev = student, optimizer, data, ev
        self.labeler, self.soft = labeler, soft
        self.accel = accel or Accel(data.labels.device)  # vdc/accel.py; the default is the plain float32 path
        if ev["labels"] == "multisl" and labeler is None:
            raise ValueError("multisl labels need a labeler network")
        if ev["labels"] == "soft" and soft is None:
            raise ValueError("soft labels need target logits")

    def step(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One optimiser step on condensed clips ``idx`` [B]; returns the (detached) loss."""
        ev = self.ev
        accel = self.accel
        x, flipped = self.data.train_views(idx, generator)
        y = self.data.hflip.labels(self.data.labels[idx], flipped)  # hard labels follow the flip (mode map)
        perm, lam = None, 1.0
        if ev["cutmix"] and float(torch.rand(1, generator=generator)) < ev["cutmix_prob"]:
            x, perm, lam = C.cutmix(x, ev["cutmix_alpha"], generator)
        x = accel.input(x)
        t = None
        if ev["labels"] == "multisl":
            with torch.no_grad(), accel.autocast():
                t = self.labeler(x).float()
        elif ev["labels"] == "soft":  # fixed targets of the unflipped clip: pair columns swapped if flipped
            t = self.data.hflip.targets(self.soft[idx], flipped)
            if perm is not None:
                t = lam * t + (1 - lam) * t[perm]
        with accel.autocast():
            s = self.student(x).float()
        ce = hard_ce(s, y, perm, lam)
        if ev["loss"] == "ce":
            loss = ce
        elif ev["loss"] == "msegt":
            loss = msegt_loss(s, t, ce, ev["mse_gt_lambda"])
        else:
            loss = kl_loss(s, t, ev["temperature"], ev["kl_tau_squared"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


@torch.no_grad()
def soft_targets(labeler: nn.Module, data: CondensedClips, batch: int, accel: Accel | None = None) -> torch.Tensor:
    """The labeler's logits on every clip's un-augmented view, [N, K] float32."""
    n = len(data)
    dev = data.labels.device
    accel = accel or Accel(dev)
    out = []
    for i in range(0, n, batch):
        with accel.autocast():
            out.append(labeler(accel.input(data.plain_view(torch.arange(i, min(i + batch, n), device=dev)))).float())
    return torch.cat(out)


# ----------------------------------------------------------------------------- the stage

def labels_for(labels_kind: str, cset: CondensedSet, data: CondensedClips, labeler_path, ev: dict, num_classes: int,
               device, accel: Accel | None = None):
    """(labeler network for Multi-SL or None, fixed soft targets [N, K] or None, where soft targets came
    from: "label_logits" / "labeler" / None)."""
    if labels_kind == "soft" and cset.label_logits is not None:
        return None, torch.as_tensor(cset.label_logits, dtype=torch.float32, device=device), "label_logits"
    if labels_kind == "hard":
        return None, None, None
    if labeler_path is None:
        raise ConfigError(f"labels '{labels_kind}' need a trained labeler (--labeler teacher .pt)")
    accel = accel or Accel(device)
    labeler = accel.prepare(load_teacher(labeler_path, device, num_classes=num_classes))
    if labels_kind == "multisl":
        return labeler, None, None
    soft = soft_targets(labeler, data, ev["test_batch"], accel)
    check_finite(soft, "the labeler's soft targets", str(labeler_path))
    return None, soft, "labeler"


def evaluate(condensed_path, frames_path, labeler_path, out_path, settings: dict, workdir=None) -> dict:
    """Run the protocol for one (condensed set, student arch, labels, loss, CutMix, seed); write the JSON."""
    ev, ds, arch, seed = settings["evaluate"], settings["dataset"], settings["arch"], int(settings["seed"])
    labels_kind, loss_kind = ev["labels"], ev["loss"]
    if loss_kind not in VALID_LOSSES[labels_kind]:
        raise ConfigError(f"labels '{labels_kind}' cannot be trained with loss '{loss_kind}' "
                          f"(use {' or '.join(sorted(VALID_LOSSES[labels_kind]))})")
    device = get_device(settings["device"])
    seed_everything(seed, settings["deterministic"])
    accel = setup_backends(settings, device)
    t0 = time.time()

    # inputs: the condensed set (checked), the student, the test clips
    cset = CondensedSet.read(condensed_path)
    check_finite(cset.clips, "clips", str(condensed_path))
    if cset.label_logits is not None:
        check_finite(cset.label_logits, "label logits", str(condensed_path))
    frames = Frames(frames_path)
    num_classes = frames.num_classes
    if int(cset.attrs.get("num_classes", num_classes)) != num_classes:
        raise InputError(f"{condensed_path}: {cset.attrs['num_classes']} classes, but {frames_path} has "
                         f"{num_classes}; condense it from this frames file")
    student = accel.prepare(create_model(arch, num_classes, **settings["model"]).to(device))  # first draw after the seed
    data = CondensedClips(cset, ds, ev["scale"], ev["ratio"], device, C.HFlip.of(ds, frames.classes),
                          shared_augment=labels_kind == "soft" and ev["soft_augment"] == "batch")
    test = loop.TestClips(load_bank(frames, "test", device, dataset=ds), ds)
    if len(test) == 0:
        raise InputError(f"{frames_path}: the test split is empty, so no accuracy can be measured; check the "
                         f"dataset's test annotations and rerun extract")

    # schedule: batch = base_batch x IPC, so the iterations per epoch stay fixed across IPCs
    ipc = int(cset.attrs.get("ipc", max(1, round(len(data) / num_classes))))
    per_class = ipc if ipc != ALL_CLIPS else max(1, round(len(data) / num_classes))  # every clip: the mean class size
    batch = int(ds["base_batch"]) * per_class
    iters = math.ceil(len(data) / batch)
    epochs = ev["epochs"]
    late = late_epochs(epochs, ev["late_epochs"])

    labeler, soft, soft_source = labels_for(labels_kind, cset, data, labeler_path, ev, num_classes, device, accel)
    opt = accel.adamw(loop.decay_groups(student, ev["weight_decay"]), lr=ev["lr"], betas=tuple(ev["betas"]))
    protocol = Protocol(student, opt, data, ev, labeler, soft, accel)
    gen = torch.Generator().manual_seed(seed)

    # resume
    inputs = {"condensed": condensed_path, "frames": frames_path, "labeler": labeler_path}
    ckpt = Checkpoint(Path(workdir or job_dir(settings["workdir"], "evaluate", out_path)) / "last.pt",
                      job_identity(settings, inputs, job_code("evaluate", settings)), log)
    curve, tests, start_epoch, elapsed = [], [], 0, 0.0
    state = ckpt.load()
    if state is not None:
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], gen)
        curve, tests, start_epoch, elapsed = state["curve"], state["tests"], state["epoch"], state["elapsed"]
        log.info("resuming from epoch %d (%s)", start_epoch, ckpt.path)

    # train the student, testing at the late epochs
    job = f"evaluate {arch} {labels_kind}/{loss_kind} on {condensed_path}"
    log.info("%s (%d clips, IPC %d, %s): batch %d, %d iterations/epoch, %d epochs, device %s", job, len(data), ipc,
             "cutmix" if ev["cutmix"] else "nocutmix", batch, iters, epochs, device)
    progress = Progress(epochs, f"evaluate {arch} {labels_kind}", log, unit="epoch", initial=start_epoch)
    student.train()
    for epoch in range(start_epoch, epochs):
        lr = ev["lr"] * schedule_factor(epoch, epochs)  # the quarter-cosine schedule, per epoch
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        perm = torch.randperm(len(data), generator=gen).to(device)
        for i in range(0, len(data), batch):
            idx = perm[i:i + batch]
            loss_sum += protocol.step(idx, gen) * len(idx)
        row = {"epoch": epoch, "loss": float(loss_sum) / len(data), "lr": lr}
        if not math.isfinite(row["loss"]):
            raise NonFiniteError(f"{job}: the training loss became {row['loss']} at epoch {epoch + 1}; no result "
                                 f"was written (check the condensed set and the evaluate.lr setting)")
        curve.append(row)
        metrics = {"loss": row["loss"]}
        tested = epoch in late or (ev["test_every"] and (epoch + 1) % ev["test_every"] == 0)
        if tested:
            acc = loop.test_accuracy(student, test, ev["test_batch"], accel)
            tests.append({"epoch": epoch, "top1": acc["top1"], "top5": acc["top5"]})
            metrics.update(top1=acc["top1"], top5=acc["top5"])
        progress.update(milestone=tested, **metrics)
        if (epoch + 1) % ev["checkpoint_every"] == 0 and epoch + 1 < epochs:
            ckpt.save({"epoch": epoch + 1, "model": student.state_dict(), "optimizer": opt.state_dict(),
                       "rng": rng_state(gen), "curve": curve, "tests": tests, "elapsed": elapsed + time.time() - t0})
    progress.close()

    # the result
    final = tests[-1]
    metric = ds["metric"]
    late_tests = [r for r in tests if r["epoch"] in late]
    best = max(late_tests, key=lambda r: (r[metric], -r["epoch"]))
    a = cset.attrs
    temporal = f"tc{data.t_c}-{data.sampling}-{data.interpolation}"
    result = {
        "dataset": ds["name"], "method": a.get("method", Path(condensed_path).parent.name), "ipc": ipc,
        "temporal": temporal, "seed": seed, "arch": arch, "labels": labels_kind, "loss": loss_kind,
        "cutmix": "cutmix" if ev["cutmix"] else "nocutmix",
        "top1": final["top1"], "top5": final["top5"], "best_late": dict(best), "late": late_tests, "tests": tests,
        "curve": curve,
        "wall_time_s": elapsed + time.time() - t0, "device": loop.device_name(device), "num_clips": len(data),
        "num_test": len(test), "batch": batch, "iters_per_epoch": iters, "soft_source": soft_source,
        "settings": settings, "condensed_file": str(condensed_path), "vdc_version": __version__,
    }
    write_json(out_path, result)
    ckpt.remove()
    log.info("%s: final top1 %.2f top5 %.2f, best late %s %.2f (epoch %d), %.1f s", out_path, result["top1"],
             result["top5"], metric, best[metric], best["epoch"], result["wall_time_s"])
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condensed", required=True, help="condensed set (.h5)")
    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset (its test split is used)")
    p.add_argument("--labeler", help="trained teacher (.pt) for soft / Multi-SL labels")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--arch", default="minic3d", help="student architecture (with --config)")
    p.add_argument("--labels", default="multisl", choices=["hard", "soft", "multisl"], help="(with --config)")
    p.add_argument("--loss", default="msegt", choices=["ce", "kl", "msegt"], help="(with --config)")
    p.add_argument("--cutmix", default="nocutmix", choices=["cutmix", "nocutmix"], help="(with --config)")
    p.add_argument("--seed", type=int, default=0, help="student seed (with --config)")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    settings = resolve_settings(args, "evaluate", arch=args.arch, labels=args.labels, loss=args.loss,
                                cutmix=args.cutmix, seed=args.seed)
    evaluate(args.condensed, args.frames, args.labeler, args.out, settings)
    return 0
