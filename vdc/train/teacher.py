"""The teacher stage: train one network on the full training split with the reference recipe.

The trained network is the "Full dataset" row of the tables, the labeler of soft / Multi-SL labels,
RDED's observer, Herding's feature model and EDC's statistics source.

Recipe (study.md section 3; every value from ``settings["teacher"]``):

* SGD(lr, momentum 0.9, weight decay 1e-4 on every parameter), gradient-norm clipping at 40;
* learning rate lr * f(i) at iteration i (epoch e = i // iters_per_epoch):
  f(i) = w(i) * gamma ** #{milestones m : e >= m},
  w(i) = s + (1 - s) * min(1, i / (warmup_epochs * iters_per_epoch)), s = warmup_start_factor (0.1),
  i.e. a per-iteration linear warm-up x0.1 -> x1, then x gamma (0.1) at each milestone (100, 140: the
  reference's mmengine MultiStepLR(begin=10, milestones=[90, 130]) counts from its begin epoch);
* batch of ``batch`` videos, reshuffled every epoch (last batch may be smaller); one clip per video:
  a random window of clip_len (8) frames at clip_interval (8) (floor(L/8) for short videos),
  RandomResizedCrop(area scale 0.08-1, ratio 3/4-4/3) + the dataset's flip (``hflip``: a flipped clip
  of a mirrored class takes the paired label) to input_size, same box for every frame;
* the train split is loaded once into device memory (streamed when it does not fit); test = one centre clip x centre crop per video;
* on CUDA the fast paths of ``settings["performance"]`` (vdc/accel.py: bf16 autocast of the forward,
  channels_last_3d, fused SGD); on the CPU none, whatever the settings say.

Resumable (vdc/resume.py): after every epoch ``<workdir>/teacher/<job>/last.pt`` holds the model,
optimiser, scheduler, RNG states, epoch, curve and elapsed time, tied to the settings, the frames
file's contents and the code; a rerun of the same job resumes from it and ends with exactly the
weights of an uninterrupted run (deterministic CPU settings). The checkpoint is removed once the
outputs are written.

Outputs:
  ``.pt``   the teacher file (layout: vdc/formats/teacher.py)
  ``.json`` {"dataset", "arch", "top1", "top5" (percent, final epoch), "curve": [{epoch, loss, lr,
            train_top1[, test_top1, test_top5]}], "wall_time_s", "device", "num_train", "num_test",
            "num_parameters", "settings", "frames_file", "vdc_version"}
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
from vdc.data import clips as C
from vdc.data.frames import Frames, load_bank
from vdc.errors import InputError
from vdc.fingerprint import job_code
from vdc.formats.teacher import build_teacher, read_teacher, save_teacher
from vdc.models import create_model
from vdc.progress import Progress
from vdc.resume import Checkpoint, job_dir, job_identity, rng_state, set_rng_state
from vdc.train import loop
from vdc.utils import get_device, seed_everything, write_json

log = logging.getLogger("vdc.teacher")


def lr_factor(it: int, iters_per_epoch: int, cfg: dict) -> float:
    """Multiplier of the base lr at iteration ``it``: linear warm-up, then step decay (see module doc)."""
    warm = cfg["warmup_epochs"] * iters_per_epoch
    s = cfg["warmup_start_factor"]
    w = s + (1 - s) * min(1.0, it / warm) if warm > 0 else 1.0
    epoch = it // iters_per_epoch
    return w * cfg["gamma"] ** sum(epoch >= m for m in cfg["milestones"])


def train_one_epoch(model, opt, sched, train, ds: dict, cfg: dict, gen: torch.Generator, accel: Accel,
                    hflip: C.HFlip) -> dict:
    """One pass over the training videos in a fresh random order, forwards under ``accel.autocast()``,
    labels of flipped views as ``hflip`` says; returns the epoch's mean loss and train top-1 (read from
    the device once, at the end)."""
    device = train.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    perm = torch.randperm(len(train), generator=gen).to(device)
    for i in range(0, len(train), cfg["batch"]):
        videos = perm[i:i + cfg["batch"]]
        x, y = loop.train_views(train, videos, ds, gen, hflip, cfg["scale"], cfg["ratio"])
        with accel.autocast():
            logits = model(accel.input(x)).float()
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(videos)
        correct += (logits.argmax(1) == y).sum()
    return {"loss": float(loss_sum) / len(train), "train_top1": 100.0 * float(correct) / len(train)}


def train_teacher(frames_path, out_path, metrics_path, settings: dict, workdir=None) -> dict:
    """Train the teacher of ``settings`` on the frames file; write the .pt and the .json; return the metrics."""
    cfg, ds, arch = settings["teacher"], settings["dataset"], settings["arch"]
    device = get_device(settings["device"])
    seed_everything(cfg["seed"], settings["deterministic"])
    accel = setup_backends(settings, device)
    t0 = time.time()

    # data: the whole train split on the device, the test clips prepared once
    frames = Frames(frames_path)
    train = load_bank(frames, "train", device, dataset=ds)
    test = loop.TestClips(load_bank(frames, "test", device, dataset=ds), ds)
    hflip = C.HFlip.of(ds, frames.classes)
    if len(train) == 0 or len(test) == 0:
        raise InputError(f"{frames_path}: the {'train' if len(train) == 0 else 'test'} split is empty; check "
                         f"the dataset's annotations and rerun extract")
    num_classes = frames.num_classes

    # model, optimiser, schedule
    model = accel.prepare(create_model(arch, num_classes, **settings["model"]).to(device))
    opt = accel.sgd(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    iters = math.ceil(len(train) / cfg["batch"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, iters, cfg))
    gen = torch.Generator().manual_seed(cfg["seed"])

    # resume
    ckpt = Checkpoint(Path(workdir or job_dir(settings["workdir"], "teacher", out_path)) / "last.pt",
                      job_identity(settings, {"frames": frames_path}, job_code("teacher", settings)), log)
    curve, start_epoch, elapsed = [], 0, 0.0
    state = ckpt.load()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], gen)
        curve, start_epoch, elapsed = state["curve"], state["epoch"], state["elapsed"]
        log.info("resuming %s from epoch %d (%s)", arch, start_epoch, ckpt.path)

    # train
    log.info("teacher %s on %s: %d train / %d test videos, %d classes, %d iterations/epoch, device %s",
             arch, ds["name"], len(train), len(test), num_classes, iters, device)
    progress = Progress(cfg["epochs"], f"teacher {arch}", log, unit="epoch", initial=start_epoch)
    model.train()
    for epoch in range(start_epoch, cfg["epochs"]):
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        row.update(train_one_epoch(model, opt, sched, train, ds, cfg, gen, accel, hflip))
        if (epoch + 1) % cfg["eval_every"] == 0 or epoch + 1 == cfg["epochs"]:
            acc = loop.test_accuracy(model, test, batch=cfg["batch"] * 2, accel=accel)
            row.update(test_top1=acc["top1"], test_top5=acc["top5"])
        curve.append(row)
        progress.update(milestone=True, **{k: v for k, v in row.items() if k != "epoch"})
        ckpt.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                   "scheduler": sched.state_dict(), "rng": rng_state(gen), "curve": curve,
                   "elapsed": elapsed + time.time() - t0})
    progress.close()

    # outputs
    final = curve[-1]  # the last epoch is always tested
    metrics = {"dataset": ds["name"], "arch": arch, "top1": final["test_top1"], "top5": final["test_top5"],
               "curve": curve, "wall_time_s": elapsed + time.time() - t0, "device": loop.device_name(device),
               "num_train": len(train), "num_test": len(test),
               "num_parameters": sum(p.numel() for p in model.parameters()), "settings": settings,
               "frames_file": str(frames_path), "vdc_version": __version__}
    save_teacher(out_path, arch, num_classes, settings["model"], model, settings)
    write_json(metrics_path, metrics)
    ckpt.remove()
    log.info("teacher %s: test top1 %.2f top5 %.2f in %.1f s", arch, metrics["top1"], metrics["top5"],
             metrics["wall_time_s"])
    return metrics


def import_teacher(frames_path, given, out_path, metrics_path, settings: dict) -> dict:
    """Use an existing network instead of training one (``datasets.<name>.teachers.<arch>`` in the
    config: e.g. a Kinetics-pretrained I3D, as the reference's I3D / SlowOnly teachers are — vdc
    downloads nothing). The file is a vdc teacher file or a bare state_dict of ``arch`` (built with the
    config's model settings); it is checked against the dataset (architecture, number of classes),
    tested on the test split like a trained teacher, and written in the teacher layout."""
    ds, arch = settings["dataset"], settings["arch"]
    device = get_device(settings["device"])
    seed_everything(settings["teacher"]["seed"], settings["deterministic"])
    accel = setup_backends(settings, device)
    t0 = time.time()
    frames = Frames(frames_path)
    test = loop.TestClips(load_bank(frames, "test", device, dataset=ds), ds)
    if len(test) == 0:
        raise InputError(f"{frames_path}: the test split is empty; check the dataset's annotations and rerun extract")
    record = read_teacher(given, arch=arch, num_classes=frames.num_classes, model=settings["model"])
    model = build_teacher(record, device)
    acc = loop.test_accuracy(model, test, batch=settings["teacher"]["batch"] * 2, accel=accel)
    metrics = {"dataset": ds["name"], "arch": arch, "top1": acc["top1"], "top5": acc["top5"], "curve": [],
               "imported_from": str(given), "wall_time_s": time.time() - t0, "device": loop.device_name(device),
               "num_train": int(len(frames.split_ids("train"))), "num_test": len(test),
               "num_parameters": sum(p.numel() for p in model.parameters()), "settings": settings,
               "frames_file": str(frames_path), "vdc_version": __version__}
    save_teacher(out_path, arch, frames.num_classes, record["model"], model, settings)
    write_json(metrics_path, metrics)
    log.info("teacher %s imported from %s: test top1 %.2f top5 %.2f", arch, given, acc["top1"], acc["top5"])
    return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--out", required=True, help="trained network (.pt)")
    p.add_argument("--metrics", required=True, help="test accuracy and learning curve (.json)")
    p.add_argument("--arch", help="architecture (with --config; default: the config's teacher.arch)")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    arch = args.arch
    if args.config and not arch:
        from vdc.config import load_config

        arch = load_config(args.config)["teacher"]["arch"]
    settings = resolve_settings(args, "teacher", arch=arch)
    if settings["given"]:
        import_teacher(args.frames, settings["given"], args.out, args.metrics, settings)
    else:
        train_teacher(args.frames, args.out, args.metrics, settings)
    return 0
