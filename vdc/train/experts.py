"""Expert trajectories for DATM: ``python -m vdc experts --frames H5 --out H5 --settings JSON``.

``num_experts`` networks (``experts.arch``, MiniC3D-IN by default) are trained on the real training
clips from independent initialisations; each one's parameters are recorded after initialisation and
after every epoch. Only snapshots 0..keep_epochs are stored (DATM reads no later ones:
keep_epochs = max_start_epoch + expert_epochs).

Recipes (``experts.recipe``; explicit lr / momentum / weight_decay / grad_clip / augment override):

=========  =====  ========  ======  =========  ===========================================
recipe     lr     momentum  wd      grad clip  augmentation
=========  =====  ========  ======  =========  ===========================================
authors    0.02   0.9       1e-4    40         random resized crop (0.08-1) + flip (the study's
                                               authors' K400 script)
mtt        0.01   0         0       none       none: centre crop (MTT / DATM buffer.py)
=========  =====  ========  ======  =========  ===========================================

Expert i (seed s_i = experts.seed * 100003 + i) is initialised after ``torch.manual_seed(s_i)`` and
draws its data order, windows and crops from a generator seeded with s_i: SGD at a constant learning
rate, batch ``experts.batch`` (16), one random 8-frame clip per video per epoch in a fresh random
order (``vdc.train.loop.train_batch``, with augmentation or the centre crop). After the last epoch
its test top-1 (one centre clip x centre crop per test video, ``vdc.train.loop.test_accuracy``) is
recorded. A NaN or infinite training loss stops the job (NonFiniteError), nothing is written.

Output: the experts file, layout in vdc/formats/experts.py (written atomically once all experts are
done; DATM reads it through that module).

Resume (vdc/resume.py): each expert checkpoints to ``<job dir>/expert_<i>.pt`` after every epoch
(model, optimiser, the data generator's and the global RNG's states — dropout draws from the latter —
and the snapshots so far), tied to the settings, the frames file's contents and the code. A rerun
reuses finished experts and resumes an unfinished one from its last epoch, ending bit-identical on
the CPU. All checkpoints are removed once the experts file is written.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdc.cli import add_settings_arguments, resolve_settings
from vdc.data.frames import Frames, VideoBank, load_bank
from vdc.errors import InputError, NonFiniteError
from vdc.fingerprint import job_code
from vdc.formats.experts import ExpertRecord, write_experts
from vdc.models import create_model
from vdc.progress import Progress
from vdc.resume import Checkpoint, job_dir, job_identity, rng_state, set_rng_state
from vdc.train import loop
from vdc.utils import get_device, seed_everything, set_threads

log = logging.getLogger("vdc.experts")

RECIPES = {
    "authors": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 40.0, "augment": True},
    "mtt": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "augment": False},
}
TEST_BATCH = 64


def resolve_recipe(ex: dict) -> dict:
    """The recipe's hyperparameters with the experts section's explicit (non-null) keys taken over them."""
    r = dict(RECIPES[ex["recipe"]])
    for k in r:
        if ex[k] is not None:
            r[k] = ex[k]
    r["batch"] = int(ex["batch"])
    return r


def keep_epochs(ex: dict) -> int:
    """Snapshots kept: 0..keep_epochs (null: every epoch), never more than were trained."""
    k = ex["keep_epochs"]
    return int(ex["epochs"]) if k is None else min(int(k), int(ex["epochs"]))


def expert_seed(ex: dict, i: int) -> int:
    return int(ex["seed"]) * 100003 + i


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """All parameters, flattened and concatenated in named_parameters() order (float32, CPU)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


# ----------------------------------------------------------------------------- one expert

def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: VideoBank, dataset: dict, rec: dict,
                gen: torch.Generator, where: str) -> float:
    """One pass over the training videos in a fresh random order; returns the mean training loss.
    A non-finite loss raises NonFiniteError naming ``where``."""
    n = len(train)
    perm = torch.randperm(n, generator=gen).to(train.labels.device)
    total, count = 0.0, 0
    for s in range(0, n, rec["batch"]):
        videos = perm[s:s + rec["batch"]]
        x = loop.train_batch(train, videos, dataset, gen, augment=rec["augment"])
        loss = F.cross_entropy(model(x), train.labels[videos])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rec["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), rec["grad_clip"])
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"{where}: the training loss is {value}; nothing was written. Lower experts.lr "
                                 f"(or set experts.grad_clip) and rerun")
        total += value * len(videos)
        count += len(videos)
    return total / max(count, 1)


def train_one_expert(i: int, train: VideoBank, test: loop.TestClips, num_classes: int, settings: dict,
                     ckpt: Checkpoint, device: torch.device) -> dict:
    """Train expert ``i`` (resuming from ``ckpt``); returns {snapshots [S] of [P], train_loss, test_top1,
    seed, epoch, done}."""
    ex, ds = settings["experts"], settings["dataset"]
    rec, epochs, keep, seed = resolve_recipe(ex), int(ex["epochs"]), keep_epochs(ex), expert_seed(ex, i)
    where = f"experts {ds['name']} (expert {i})"

    # initialisation
    torch.manual_seed(seed)
    model = create_model(settings["arch"], num_classes, **settings["model"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=rec["lr"], momentum=rec["momentum"], weight_decay=rec["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "snapshots": [flat_params(model)], "train_loss": [], "done": False, "seed": seed}

    # resume
    saved = ckpt.load()
    if saved is not None:
        state = saved["state"]
        if state["done"]:
            log.info("expert %d: finished earlier (%s)", i, ckpt.path)
            return state
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"], gen)
        log.info("expert %d: resuming after epoch %d (%s)", i, state["epoch"], ckpt.path)

    # train
    progress = Progress(epochs, f"expert {i + 1}/{ex['num_experts']} ({settings['arch']})", log, unit="epoch",
                        initial=state["epoch"])
    model.train()
    for epoch in range(state["epoch"], epochs):
        state["train_loss"].append(train_epoch(model, opt, train, ds, rec, gen, where))
        state["epoch"] = epoch + 1
        if epoch + 1 <= keep:
            state["snapshots"].append(flat_params(model))
        if epoch + 1 == epochs:
            state["test_top1"] = loop.test_accuracy(model, test, batch=TEST_BATCH)["top1"]
            state["done"] = True
        progress.update(milestone=True, loss=state["train_loss"][-1])
        ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(gen), "state": state})
    progress.close()
    log.info("expert %d: %d epochs, last train loss %.4f, test top1 %.2f", i, epochs,
             state["train_loss"][-1], state["test_top1"])
    return state


# ----------------------------------------------------------------------------- the stage

def train_experts(frames_path: str | Path, out_path: str | Path, settings: dict,
                  workdir: str | Path | None = None) -> dict:
    """Train every expert and write the experts file (layout: vdc/formats/experts.py). ``workdir``: the
    job's checkpoint folder (default ``job_dir(settings["workdir"], "experts", out_path)``). Returns a summary."""
    ex, ds = settings["experts"], settings["dataset"]
    seed_everything(int(ex["seed"]), settings["deterministic"])
    set_threads(ex["threads"])
    device = get_device(settings["device"])
    t0 = time.time()

    # data
    frames = Frames(frames_path)
    train = load_bank(frames, "train", device)
    test = loop.TestClips(load_bank(frames, "test", device), ds)
    if len(train) == 0:
        raise InputError(f"{frames_path}: no training videos; check the annotations of dataset {ds['name']} "
                         f"and rerun extract")
    num_classes = frames.num_classes

    # one resumable checkpoint per expert
    folder = Path(workdir or job_dir(settings["workdir"], "experts", out_path))
    identity = job_identity(settings, {"frames": frames_path}, job_code("experts", settings))
    ckpts = [Checkpoint(folder / f"expert_{i}.pt", identity, log) for i in range(int(ex["num_experts"]))]
    log.info("%d experts %s on %s: %d train / %d test videos, recipe %s, device %s", len(ckpts), settings["arch"],
             ds["name"], len(train), len(test), json.dumps(resolve_recipe(ex), sort_keys=True), device)
    results = [train_one_expert(i, train, test, num_classes, settings, ckpt, device) for i, ckpt in enumerate(ckpts)]

    # output
    keep = keep_epochs(ex)
    dtype = np.float16 if ex["dtype"] == "float16" else np.float32
    records = [ExpertRecord(params=torch.stack(r["snapshots"][:keep + 1]).numpy().astype(dtype),
                            test_top1=float(r["test_top1"]), train_loss=r["train_loss"], seed=int(r["seed"]),
                            epochs=int(r["epoch"])) for r in results]
    attrs = {"arch": settings["arch"], "model": json.dumps(settings["model"], sort_keys=True),
             "num_classes": num_classes, "epochs": int(ex["epochs"]), "keep_epochs": keep,
             "recipe": json.dumps(resolve_recipe(ex), sort_keys=True), "dtype": np.dtype(dtype).name,
             "input_size": int(ds["input_size"]), "clip_len": int(ds["clip_len"]),
             "clip_interval": int(ds["clip_interval"]), "dataset": ds["name"], "frames_file": str(frames_path),
             "settings": json.dumps(settings, sort_keys=True)}
    write_experts(out_path, records, create_model(settings["arch"], num_classes, **settings["model"]), attrs)
    for ckpt in ckpts:
        ckpt.remove()
    accs = [r["test_top1"] for r in results]
    log.info("%d experts in %.1f s; test top1 %s", len(results), time.time() - t0, ", ".join(f"{a:.1f}" for a in accs))
    return {"test_top1": accs, "wall_time_s": time.time() - t0, "keep_epochs": keep}


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--out", required=True, help="experts HDF5 to write")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    settings = resolve_settings(args, "experts")
    summary = train_experts(args.frames, args.out, settings)
    print(json.dumps(summary))
    return 0
