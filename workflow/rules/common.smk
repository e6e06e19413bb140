# Config access and target lists. Every rule file includes nothing itself; the Snakefile includes
# this file first. Paths come from vdc.config.PATHS, settings from vdc.config.stage_settings, so
# `python -m vdc <stage> --config ...` and Snakemake always agree.
import functools
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

# jobserver: true -> the jobs' `python -m vdc` run in children of one local job server that has imported
# torch once (vdc/jobserver.py); the jobs find it through this environment variable, so the shell commands
# (and what Snakemake reruns) do not change with the switch.
from vdc.jobserver import ENV as _JOBSERVER_ENV, socket_path as _jobserver_socket  # (no torch: stdlib only)

if config["jobserver"]:
    os.environ[_JOBSERVER_ENV] = _jobserver_socket()
else:
    os.environ.pop(_JOBSERVER_ENV, None)

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
    """The condensed set of (dataset, method, IPC, seed) at the method's own temporal setting, its tag made
    canonical as the studies' runs make it (vdc.studies.canonical_temporal): the same file they train on."""
    from vdc.studies import canonical_temporal

    temporal = canonical_temporal(method_settings(config, dataset, method, int(ipc))["temporal"],
                                  int(config["datasets"][dataset]["clip_len"]))
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
    if "experts" in needs:  # the experts index and the expert files it names (experts.smk)
        out["experts"] = path("experts", dataset=wildcards.dataset)
        n = section(config, wildcards.dataset, "experts")["num_experts"]
        out.update({f"expert_{i}": path("expert", dataset=wildcards.dataset, expert=i) for i in range(n)})
    if ms.get("init") == "rded":
        out["init"] = condensed_of(wildcards.dataset, "rded", wildcards.ipc, wildcards.seed)
    return out


# ------------------------------------------------------------------ targets
# Every table and figure is a study (vdc/studies.py) that expands to exactly the runs its cells need;
# study.tables names the studies `snakemake` builds by default, and every study is a target of its own
# (`snakemake table5`, tables.smk). A run is one evaluation JSON at vdc.config.eval_path (its condensed
# set at PATHS["condensed"], its temporal tag explicit), so a run several studies share is one file,
# computed once. validate_config (above, on either config path) has checked that every study of
# study.tables builds.
from vdc import report as vdc_report
from vdc.studies import ABLATIONS, STUDIES, STUDY_EXTS, make_run, spec as study_spec, study_runs, teacher_archs

STUDY_RUNS = study_runs(config)  # every run of the default studies, each once
REPORT = os.path.join(RESULTS, "report")


def _once(fn):
    """An argument-less target list, computed on its first call only (it depends on the config alone, which
    is fixed once parsed); every call returns its own copy of the list."""
    computed = functools.cache(fn)

    @functools.wraps(fn)
    def once():
        return list(computed())

    return once


@functools.cache
def _study(name):
    """Study `name` (vdc.studies.Spec), built once per name (a WorkflowError names the config key when it
    cannot be built)."""
    try:
        return study_spec(config, name)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


def runs_of(name):
    """The runs of one study (a WorkflowError names the config key when it cannot be built)."""
    return _study(name).runs()


@_once
def study_condensed():
    """Every condensed set the default studies train on."""
    return sorted({r.condensed_path(config) for r in STUDY_RUNS})


@_once
def study_evals():
    """Every evaluation the default studies need."""
    return sorted({r.eval_path(config) for r in STUDY_RUNS})


@_once
def full_data_evals():
    """The protocol on every training clip (study.full_data; IPC 0 = all clips): one run per dataset, the
    run (vdc.studies.make_run) Table 8's full-data cell reads."""
    return [make_run(config, ds, "full", 0, STUDY["seeds"][0], STUDY["eval_arch"], "hard").eval_path(config)
            for ds in STUDY["datasets"]] if STUDY["full_data"] else []


@_once
def study_datasets():
    return sorted({r.dataset for r in STUDY_RUNS} | set(STUDY["datasets"]))


@_once
def study_teachers():
    """The main teacher's metrics per dataset (the tables' Full-dataset row)."""
    return [path("teacher_metrics", dataset=ds, arch=config["teacher"]["arch"]) for ds in study_datasets()]


def table_files(name):
    """The files of one study: {md, csv, tex, html, png} (vdc.studies.STUDY_EXTS)."""
    return {ext: os.path.join(path("tables"), f"{name}.{ext}") for ext in STUDY_EXTS}


def table_outputs():
    """Every file of the default studies."""
    return [f for name in STUDY["tables"] for f in table_files(name).values()]


def table_inputs(wildcards):
    """A study's evaluation JSONs, plus the teacher metrics and frames files of its datasets."""
    runs = runs_of(wildcards.study)
    dss = sorted({r.dataset for r in runs}) or STUDY["datasets"]
    return {"evals": sorted({r.eval_path(config) for r in runs}),
            "teachers": [path("teacher_metrics", dataset=ds, arch=config["teacher"]["arch"]) for ds in dss],
            "frames": [path("frames", dataset=ds) for ds in dss]}


def paper_files():
    """The paper's numbers side by side with this run's (tables.paper)."""
    return {ext: os.path.join(path("tables"), f"paper.{ext}") for ext in ("md", "html")}


MAIN_STUDIES = tuple(n for n in STUDIES if n not in ABLATIONS)  # the main results; the rest are ablations


@_once
def compare_sets():
    """The condensed sets shown side by side per (dataset, IPC, first seed): those of the main studies in
    study.tables (else of all default studies)."""
    main = [n for n in STUDY["tables"] if n in MAIN_STUDIES] or STUDY["tables"]
    runs = {r for n in main for r in runs_of(n) if r.seed == min(STUDY["seeds"]) and r.method != "full"}
    return sorted({r.condensed_path(config) for r in runs})


@_once
def distilled_sets():
    """Condensed sets of an optimising method (EDC, DATM and their variants): their /history is drawn."""
    return [c for c, r in sorted({r.condensed_path(config): r for r in STUDY_RUNS}.items())
            if method_settings(config, r.dataset, r.method, r.ipc)["base"] in ("edc", "datm")]


@_once
def report_teachers():
    """Metrics of every teacher the default studies read (labelers, EDC / RDED / Herding networks)."""
    return [path("teacher_metrics", dataset=ds, arch=a) for ds, archs in teacher_archs(config, STUDY_RUNS).items()
            for a in archs]


def report_figures():
    """Every file the report rules draw (tables.report): the outputs of rules report_sets and report_curves
    (tables.smk; so call this only after that file is included, as rule all and rule report_figures do)."""
    return [*rules.report_sets.output, *rules.report_curves.output]


@_once
def report_evals():
    """The evaluations whose curves the report draws: the default studies' and the full-data runs."""
    return sorted(set(study_evals() + full_data_evals()))


# What the tables stage reads of the config (its params: a change to these reruns the tables).
TABLE_KEYS = ("study", "studies", "datasets", "models", "evaluate", "methods", "tables", "teacher", "results")


def _tables_settings():
    return shlex.quote(settings_json({k: config[k] for k in TABLE_KEYS if k in config}))


def _rst(text):
    """Plain text safe inside a reStructuredText caption."""
    for ch in "\\*`|_":
        text = text.replace(ch, f"\\{ch}")
    return text


def study_caption(wildcards):
    from vdc.tables import study_caption as caption

    try:
        return _rst(caption(config, _study(wildcards.study)))  # the Spec table_inputs built
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


def _study_kind(wildcards):
    return "ablations" if wildcards.study in ABLATIONS else "main results"


def _set_labels(condensed):
    ds, method, stem = vdc_report.set_key(condensed)
    return {"dataset": ds, "method": method, "set": stem}


def _curve_labels(kind, f):
    p = Path(f)
    return {"dataset": p.name.split("-")[0], "figure": p.stem} if kind == "teachers" else \
        {"dataset": p.parent.parent.name, "method": p.parent.name, "set": p.stem}


def all_targets():
    out = table_outputs() + full_data_evals()
    if config["tables"]["paper"]:
        out += list(paper_files().values())
    if config["tables"]["report"]:
        out += report_figures()
    return out


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
