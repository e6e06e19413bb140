"""``python -m vdc settings``: print what a stage will run with, fully resolved.

    python -m vdc settings --config configs/ucf101.yaml                      # the whole resolved config
    python -m vdc settings --config configs/ucf101.yaml --stage evaluate --dataset ucf101 \\
        --method rded --ipc 1 --arch r2plus1d_r18 --labels multisl            # one job's settings

The config files are resolved exactly as ``snakemake --configfile A [B ...]`` resolves them (each file
stands alone unless it says ``extends:``; later files merge over earlier ones; schema defaults filled),
and a stage's settings are built by :func:`vdc.config.stage_settings`, the function the workflow uses
for the ``--settings`` it passes to each job. Wildcards left out take the study's first value (first
method, IPC and seed of ``study``; the teacher's arch for teacher/stats; ``study.eval_arch`` and
Multi-SL labels for evaluate).

:func:`job_settings` resolves the settings of every job kind the study can run for a config; the
config tests use it to make sure a config either fails validation with a ConfigError or resolves
cleanly (no job discovers a config mistake at run time).
"""
from __future__ import annotations

import argparse
import json
from typing import Iterator

import yaml

from vdc.config import ConfigError, labeler_arch, load_config, method_settings, section, stage_settings

JOB_STAGES = ("toy", "extract", "teacher", "experts", "stats", "condense", "evaluate")


def wildcards_for(cfg: dict, stage: str, dataset: str, method=None, ipc=None, seed=None, arch=None,
                  labels=None, loss=None, cutmix=None) -> dict:
    """The wildcards of one job of ``stage``, unset ones from the study's first values."""
    study = cfg["study"]
    if stage in ("teacher", "stats"):
        return {"arch": arch or cfg["teacher"]["arch"]}
    if stage == "condense":
        method = method or study["methods"][0]
        ipc = int(ipc or study["ipc"][0])
        return {"method": method, "ipc": ipc, "seed": int(seed if seed is not None else study["seeds"][0]),
                "temporal": method_settings(cfg, dataset, method, ipc)["temporal"]}
    if stage == "evaluate":
        labels = labels or "multisl"
        ev = section(cfg, dataset, "evaluate")  # the dataset's evaluate (stage_overrides), as studies.make_run
        return {"arch": arch or study["eval_arch"], "labels": labels,
                "loss": loss or ("ce" if labels == "hard" else ev["loss"]),
                "cutmix": cutmix or ("cutmix" if ev["cutmix"] else "nocutmix"),
                "seed": int(seed if seed is not None else study["seeds"][0])}
    return {}


def job_settings(cfg: dict) -> Iterator[tuple[str, str, dict, dict]]:
    """(stage, dataset, wildcards, settings) of every kind of job the study runs (every method at every
    IPC, every evaluation network and label type; one seed)."""
    study = cfg["study"]
    methods = list(dict.fromkeys([*study["methods"], *study["edc_networks"]]))
    archs = list(dict.fromkeys([study["eval_arch"], *study["cross_arch"]]))
    for ds in study["datasets"]:
        kinds = [("extract", {}), ("experts", {})]
        if cfg["datasets"][ds]["format"] == "toy":
            kinds.append(("toy", {}))
        teachers = {cfg["teacher"]["arch"]}
        for m in methods:
            for ipc in study["ipc"]:
                wc = wildcards_for(cfg, "condense", ds, method=m, ipc=ipc)
                kinds.append(("condense", wc))
                teachers.update(method_settings(cfg, ds, m, ipc).get("networks", []))
        for arch in archs:
            for labels in study["labels"]:
                kinds.append(("evaluate", wildcards_for(cfg, "evaluate", ds, arch=arch, labels=labels)))
                if labels != "hard":
                    teachers.add(labeler_arch(cfg, ds, arch))
        kinds += [(st, {"arch": a}) for a in sorted(teachers) for st in ("teacher", "stats")]
        for stage, wc in kinds:
            yield stage, ds, wc, stage_settings(cfg, stage, ds, **wc)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "--configfile", dest="configs", action="append", required=True,
                   help="config file (repeatable: later files merge over earlier ones, as snakemake --configfile)")
    p.add_argument("--stage", choices=JOB_STAGES, help="print this stage's job settings (default: the whole config)")
    p.add_argument("--dataset", help="dataset (default: the study's first)")
    p.add_argument("--method")
    p.add_argument("--ipc", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--arch", help="network (teacher / stats / evaluate)")
    p.add_argument("--labels", choices=["hard", "soft", "multisl"])
    p.add_argument("--loss", choices=["ce", "kl", "msegt"])
    p.add_argument("--cutmix", choices=["cutmix", "nocutmix"])


def main(args: argparse.Namespace) -> int:
    cfg = load_config(*args.configs)
    if not args.stage:
        print(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=110), end="")
        return 0
    dataset = args.dataset or cfg["study"]["datasets"][0]
    if dataset not in cfg["datasets"]:
        raise ConfigError(f"--dataset {dataset}: not under datasets (defined: {', '.join(cfg['datasets'])})")
    if args.method and args.method not in cfg["methods"]:
        raise ConfigError(f"--method {args.method}: not under methods (defined: {', '.join(cfg['methods'])})")
    wc = wildcards_for(cfg, args.stage, dataset, args.method, args.ipc, args.seed, args.arch, args.labels,
                       args.loss, args.cutmix)
    print(json.dumps(stage_settings(cfg, args.stage, dataset, **wc), indent=2, sort_keys=True))
    return 0
