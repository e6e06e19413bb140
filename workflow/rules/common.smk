# Config access and target lists. Every rule file includes nothing itself; the Snakefile includes
# this file first. Paths come from vdc.config.PATHS, settings from vdc.config.stage_settings, so
# `python -m vdc <stage> --config ...` and Snakemake always agree.
import os
import shlex
import sys
from pathlib import Path

from vdc.fingerprint import code_version, stage_code_roots
from vdc.gpulease import local_gpus_present
from vdc.__main__ import STAGES
from vdc.config import (
    ConfigError,
    PATHS,
    eval_path,
    labeler_arch,
    load_config,
    method_settings,
    section,
    settings_json,
    stage_settings,
    validate_config,
)

try:
    if workflow.overwrite_configfiles:  # --configfile A [B ...]: those files alone (+ extends, + --config)
        _cfg = load_config(*workflow.overwrite_configfiles, overrides=dict(workflow.config_settings.config))
        config.clear()
        config.update(_cfg)
    else:
        validate_config(config, "config.yaml (+ --config overrides)")
except ConfigError as _err:
    raise WorkflowError(str(_err)) from None

RESULTS = config["results"]
WORKDIR = config["workdir"]
LOGS = config["logs"]
STUDY = config["study"]
CONDA_ENV = "../../envs/vdc.yaml"


def _uses_conda():
    try:
        return "conda" in {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    except AttributeError:
        return False


# The interpreter that runs the stages: the environment's python under --sdm conda, otherwise the
# one running Snakemake (so a venv works without being activated).
VDC = "python -m vdc" if _uses_conda() else f"{shlex.quote(sys.executable)} -m vdc"


# What a GPU stage (teacher, experts, stats, condense, evaluate) declares as `resources: gpu=GPU`.
# With a GPU (or device: cuda) each such job takes one GPU slot, so the default profile's `gpu: 1`
# runs them one at a time and `--resources gpu=4` four at a time, each on its own leased device
# (GPU_RUN). On a CPU-only machine (or device: cpu) they take no slot and run side by side like any
# job. Cluster profiles set `gpu` per rule themselves (profiles/slurm).
GPU = 0 if config["device"] == "cpu" or (config["device"] == "auto" and not local_gpus_present()) else 1

# GPU stages start through GPU_RUN: it leases a free GPU per job on a multi-GPU machine
# (vdc/gpulease.py) and is a plain pass-through under SLURM or without GPUs.
GPU_RUN = f"{VDC} gpu-lease --"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    method=r"[A-Za-z0-9_]+",
    arch=r"[a-z0-9_]+",
    ipc=r"[0-9]+",
    seed=r"[0-9]+",
    temporal=r"tc[0-9]+-(naive|segment|sliding)-(none|dup|linear)",
    labels=r"hard|soft|multisl",
    loss=r"ce|kl|msegt",
    cutmix=r"cutmix|nocutmix",


# ------------------------------------------------------------------ paths
class _KeepMissing(dict):
    def __missing__(self, key):
        return f"{{{key}}}"


def path(kind, **fields):
    """A stage's declared output (vdc.config.PATHS[kind]) under this study's results folder. Fields left
    out stay as {wildcards}: path("condensed") is the rule's output pattern, path("frames", dataset="toy")
    a concrete file."""
    return PATHS[kind].format_map(_KeepMissing(results=RESULTS, **fields))


def condensed_of(dataset, method, ipc, seed):
    """The condensed set of (dataset, method, IPC, seed) at the method's own temporal setting."""
    temporal = method_settings(config, dataset, method, int(ipc))["temporal"]
    return path("condensed", dataset=dataset, method=method, ipc=ipc, temporal=temporal, seed=seed)


def _wildcard_path(wc):
    return os.path.join(*(f"{k}={v}" for k, v in wc.items())) if wc else "all"


def log_file(rule, **wc):
    return os.path.join(LOGS, rule, _wildcard_path(wc) + ".log")


def bench_file(rule, **wc):
    return os.path.join("benchmarks", rule, _wildcard_path(wc) + ".tsv")


# ------------------------------------------------------------------ params passed to stages
def code_for(stage):
    """A params function: the fingerprint of the code one job of `stage` runs (vdc/fingerprint.py),
    so that editing a module reruns exactly the jobs that run it."""
    if stage not in STAGES:
        raise WorkflowError(f"code_for: unknown stage '{stage}' (stages: {', '.join(STAGES)})")

    def fn(wildcards):
        try:
            return code_version(*stage_code_roots(config, stage, wildcards.items()))
        except ValueError as err:
            raise WorkflowError(str(err)) from None

    return fn


def settings(stage):
    """A params function: the stage's settings as shell-quoted canonical JSON."""

    def fn(wildcards):
        wc = dict(wildcards.items())
        dataset = wc.pop("dataset")
        return shlex.quote(settings_json(stage_settings(config, stage, dataset, **wc)))

    return fn


def method_needs(wildcards):
    """Input files a condense job reads besides the frames, from the method's `needs`."""
    ms = method_settings(config, wildcards.dataset, wildcards.method, int(wildcards.ipc))
    needs = set(ms.get("needs", []))
    out = {}
    archs = sorted({config["teacher"]["arch"], *ms.get("networks", [])})
    if "teacher" in needs:
        for a in archs:
            out[f"teacher_{a}"] = path("teacher", dataset=wildcards.dataset, arch=a)
    if "stats" in needs:
        for a in archs if ms.get("networks") else [config["teacher"]["arch"]]:
            out[f"stats_{a}"] = path("stats", dataset=wildcards.dataset, arch=a)
    if "experts" in needs:
        out["experts"] = path("experts", dataset=wildcards.dataset)
    if ms.get("init") == "rded":
        out["init"] = condensed_of(wildcards.dataset, "rded", wildcards.ipc, wildcards.seed)
    return out


# ------------------------------------------------------------------ targets
def study_condensed():
    out = []
    for ds in STUDY["datasets"]:
        for m in STUDY["methods"]:
            for ipc in STUDY["ipc"]:
                for s in STUDY["seeds"]:
                    out.append(condensed_of(ds, m, ipc, s))
    return out


def study_evals():
    """Every evaluation the tables and Figure 4 need."""
    out = []
    for ds in STUDY["datasets"]:
        for m in STUDY["methods"]:
            for s in STUDY["seeds"]:
                for ipc in STUDY["ipc"]:
                    for lab in STUDY["labels"]:
                        out.append(eval_path(config, ds, m, ipc, s, STUDY["eval_arch"], lab))
                for arch in STUDY["cross_arch"]:
                    out.append(eval_path(config, ds, m, STUDY["cross_arch_ipc"], s, arch, "multisl"))
        for m in STUDY.get("edc_networks", []):
            for s in STUDY["seeds"]:
                out.append(eval_path(config, ds, m, STUDY["edc_networks_ipc"], s, STUDY["eval_arch"], "multisl"))
    return sorted(set(out))


def full_data_evals():
    """The protocol on all training clips (study.full_data_ipc > 0): one run per dataset."""
    ipc = STUDY["full_data_ipc"]
    return [eval_path(config, ds, "full", ipc, STUDY["seeds"][0], STUDY["eval_arch"], "hard")
            for ds in STUDY["datasets"]] if ipc else []


def study_teachers():
    return [path("teacher_metrics", dataset=ds, arch=config["teacher"]["arch"]) for ds in STUDY["datasets"]]


def all_targets():
    return [os.path.join(path("tables"), "table8.md"), *full_data_evals()]


# ------------------------------------------------------------------ inputs and arguments of rules
def given_teacher(wildcards):
    """The user's own network for this (dataset, arch), if the config names one: an input of the teacher job."""
    given = config["datasets"][wildcards.dataset]["teachers"].get(wildcards.arch)
    return {"given": given} if given else {}


def condense_inputs(wildcards):
    return {"frames": path("frames", dataset=wildcards.dataset), **method_needs(wildcards)}


def condense_args(wildcards, input):
    """--teacher/--stats ARCH=PATH, --experts, --init from a condense job's named inputs."""
    args = []
    for name, path in input.items():
        if name.startswith("teacher_"):
            args.append(f"--teacher {name[len('teacher_'):]}={shlex.quote(path)}")
        elif name.startswith("stats_"):
            args.append(f"--stats {name[len('stats_'):]}={shlex.quote(path)}")
        elif name in ("experts", "init"):
            args.append(f"--{name} {shlex.quote(path)}")
    return " ".join(args)


def eval_labeler(wildcards):
    """The labeler teacher of an evaluation (soft and Multi-SL labels only)."""
    if wildcards.labels == "hard":
        return {}
    arch = labeler_arch(config, wildcards.dataset, wildcards.arch)
    return {"labeler": path("teacher", dataset=wildcards.dataset, arch=arch)}


def table_outputs():
    names = ["table8", "table9", "table11"] + (["table7"] if STUDY.get("edc_networks") else [])
    out = {f"{n}_{ext}": os.path.join(path("tables"), f"{n}.{ext}") for n in names for ext in ("md", "csv")}
    out.update(figure4=os.path.join(path("tables"), "figure4.png"),
               figure4_csv=os.path.join(path("tables"), "figure4.csv"))
    return out
