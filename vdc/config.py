"""Configuration: loading, schema validation with defaults, and the settings each stage receives.

One function, :func:`stage_settings`, builds the exact settings dict a stage needs from the study
configuration. Snakemake passes that dict to the stage as a JSON ``params`` value (so a change to
a stage's own settings reruns that stage only), and ``python -m vdc <stage> --config config.yaml``
builds the same dict, so a stage run by hand behaves exactly as under Snakemake.

Output file layout (relative to ``results``) is defined once here, in :data:`PATHS`.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vdc.errors import ConfigError  # re-exported: vdc.config.ConfigError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# --------------------------------------------------------------------------------------------
# Declared outputs of every stage (format with results=..., plus the wildcards).
PATHS = {
    "toy_done": "{root}/ucfTrainTestlist/classInd.txt",
    "frames": "{results}/frames/{dataset}.h5",
    "frames_report": "{results}/frames/{dataset}.failed.tsv",
    "teacher": "{results}/teachers/{dataset}/{arch}.pt",
    "teacher_metrics": "{results}/teachers/{dataset}/{arch}.json",
    "experts": "{results}/experts/{dataset}/experts.h5",          # the index DATM reads (vdc/formats/experts.py)
    "expert": "{results}/experts/{dataset}/expert_{expert}.h5",   # one expert's job
    "stats": "{results}/stats/{dataset}/{arch}.h5",
    "condensed": "{results}/condensed/{dataset}/{method}/ipc{ipc}-{temporal}-seed{seed}.h5",
    "eval": "{results}/eval/{dataset}/{method}/ipc{ipc}-{temporal}-seed{seed}/{arch}-{labels}-{loss}-{cutmix}.json",
    "tables": "{results}/tables",
}


def path(kind: str, **fields: Any) -> str:
    """The declared output of ``kind`` (a key of PATHS) with its fields filled in."""
    return PATHS[kind].format(**fields)


def eval_path(cfg: dict, dataset: str, method: str, ipc: int, seed: int, arch: str, labels: str,
              loss: str | None = None, cutmix: bool | None = None, temporal: str | None = None) -> str:
    """Where the evaluation of one run lives: the run of :func:`vdc.studies.make_run` (the one place
    that fills in the study's defaults: loss ``ce`` for hard labels, else the dataset's evaluate.loss;
    its evaluate.cutmix; the method's temporal setting, made canonical), as the workflow's targets and
    the tables build it."""
    from vdc.studies import make_run

    return make_run(cfg, dataset, method, ipc, seed, arch, labels, loss, cutmix, temporal).eval_path(cfg)


# --------------------------------------------------------------------------------------------
# Validation with defaults (the jsonschema "extend with default" recipe).

def _default_filling_validator():
    import jsonschema

    base = jsonschema.Draft7Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def load_schema() -> dict:
    return copy.deepcopy(_schema())


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _error_line(err, prefix: str = "") -> str:
    parts = (prefix.split(".") if prefix else []) + [str(p) for p in err.absolute_path]
    where = ".".join(parts) or "(top level)"
    msg = err.message
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        import difflib

        allowed = sorted(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in allowed]
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        msg = f"unknown key {', '.join(hints)}" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
    return f"  {where}: {msg}"


def _raise(source: str, lines: list[str]) -> None:
    if lines:
        more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines[:10]) + more
                          + "\nFix these keys (each is documented in workflow/schemas/config.schema.yaml).")


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema, filling defaults, then check what one schema
    cannot: method variants and per-dataset overrides against their section's schema, names that
    refer to other entries, and ranges that involve two keys. Raises ConfigError listing every problem,
    one line per key path."""
    schema = load_schema()
    validator = _default_filling_validator()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    _raise(source, [_error_line(e) for e in errors])
    _raise(source, _fill_toy(config, schema))
    _raise(source, _check_references(config) + _check_methods(config, schema) + _check_overrides(config, schema))
    from vdc import studies  # (imports this module)

    _raise(source, studies.check(config))
    methods = study_methods(config)  # (builds every default study: once, not per dataset)
    _raise(source, [f"  {line}" for ds in config["datasets"] for line in _cross_checks(config, ds, methods)])
    return config


def _fill_toy(cfg: dict, schema: dict) -> list[str]:
    """The ``toy:`` generator block belongs to datasets of format toy only: filled with its defaults
    there, an error anywhere else (a real dataset's settings never carry toy keys)."""
    toy_schema = {**schema["definitions"]["dataset"]["properties"]["toy"], "definitions": schema["definitions"]}
    out = []
    for name, ds in cfg["datasets"].items():
        if ds["format"] == "toy":
            ds.setdefault("toy", {})
            out += [_error_line(e, f"datasets.{name}.toy") for e in _default_filling_validator()(toy_schema).iter_errors(ds["toy"])]
        elif "toy" in ds:
            out.append(f"  datasets.{name}.toy: only datasets of format toy have a toy: block (this one is "
                       f"format {ds['format']}); remove it")
    return out


def _check_references(cfg: dict) -> list[str]:
    out = []
    for name in cfg["study"]["datasets"]:
        if name not in cfg["datasets"]:
            out.append(f"  study.datasets: '{name}' is not under datasets (defined: {', '.join(cfg['datasets'])})")
    for key in ("methods", "edc_networks"):
        for name in cfg["study"][key]:
            if name not in cfg["methods"]:
                out.append(f"  study.{key}: method '{name}' has no entry under methods "
                           f"(defined: {', '.join(cfg['methods'])})")
    return out


def _section_validator(schema: dict, sub: dict, extra: dict | None = None):
    """A plain (non-default-filling) validator for one section's schema ``sub``, with the schema's
    definitions, optionally allowing ``extra`` properties."""
    import jsonschema

    sub = copy.deepcopy(sub)
    sub.pop("default", None)
    if extra:
        sub["properties"] = {**sub.get("properties", {}), **extra}
    return jsonschema.Draft7Validator({**sub, "definitions": schema["definitions"]})


BUILTIN_METHODS = ("full", "random", "herding", "rded", "edc", "datm")
_VARIANT_KEYS = {"base": {"type": "string"}, "module": {"type": "string"}}


def _check_methods(cfg: dict, schema: dict) -> list[str]:
    """A variant (``base: <built-in>``) is checked against its base method's schema; a method that is
    neither built in nor a variant must name its module (``module:``) or exist as vdc/condense/<name>.py."""
    import importlib.util

    method_schemas = schema["properties"]["methods"]["properties"]
    out = []
    for name, raw in cfg["methods"].items():
        if name in BUILTIN_METHODS:
            continue
        base = raw.get("base", name)
        if base in BUILTIN_METHODS:
            merged = {k: v for k, v in raw.items() if k not in ("base", "module")}
            v = _section_validator(schema, method_schemas[base])
            out += [_error_line(e, f"methods.{name}") for e in v.iter_errors(merged)]
        elif base != name and base not in cfg["methods"]:
            out.append(f"  methods.{name}.base: '{base}' is not a method (built in: {', '.join(BUILTIN_METHODS)}; "
                       f"or defined under methods)")
        elif "module" not in raw and importlib.util.find_spec(f"vdc.condense.{base}") is None:
            out.append(f"  methods.{name}: no module vdc/condense/{base}.py; set methods.{name}.module to the "
                       f"Python module that registers it, or base: to a built-in method")
    return out


def _check_overrides(cfg: dict, schema: dict) -> list[str]:
    """Per-dataset overrides must be valid settings of what they override (unknown keys and wrong types
    are errors, with the key's full path)."""
    out = []
    props = schema["properties"]
    method_schemas = props["methods"]["properties"]
    for ds, d in cfg["datasets"].items():
        for sec, over in d["stage_overrides"].items():
            v = _section_validator(schema, props[sec])
            out += [_error_line(e, f"datasets.{ds}.stage_overrides.{sec}")
                    for e in v.iter_errors(deep_merge(cfg[sec], over))]
        for method, over in d["method_overrides"].items():
            where = f"datasets.{ds}.method_overrides.{method}"
            if method not in cfg["methods"]:
                out.append(f"  {where}: no method '{method}' under methods (defined: {', '.join(cfg['methods'])})")
                continue
            if not isinstance(over, dict):
                out.append(f"  {where}: must be a mapping of settings, got {over!r}")
                continue
            base = cfg["methods"][method].get("base", method)
            per_ipc = over.get("ipc", {})
            if not isinstance(per_ipc, dict) or not all(str(k).isdigit() for k in per_ipc):
                out.append(f"  {where}.ipc: must map IPC numbers to settings, e.g. ipc: {{10: {{mipc: 100}}}}")
                continue
            if base not in BUILTIN_METHODS:
                continue
            v = _section_validator(schema, method_schemas[base], _VARIANT_KEYS)
            flat = {k: x for k, x in over.items() if k != "ipc"}
            out += [_error_line(e, where) for e in v.iter_errors(deep_merge(cfg["methods"][method], flat))]
            for ipc, sub in per_ipc.items():
                out += [_error_line(e, f"{where}.ipc.{ipc}")
                        for e in v.iter_errors(deep_merge(cfg["methods"][method], deep_merge(flat, sub or {})))]
    return out


def study_methods(cfg: dict) -> list[str]:
    """The methods (and variants) the study runs: study.methods, study.edc_networks and every method the
    default studies (study.tables) condense with."""
    from vdc import studies  # (imports this module)

    return list(dict.fromkeys([*cfg["study"]["methods"], *cfg["study"]["edc_networks"],
                               *(m for m in studies.study_methods(cfg) if m != "full")]))


def _range(where: str, pair, what: str = "range") -> list[str]:
    lo, hi = pair
    return [] if lo <= hi else [f"{where}: [{lo}, {hi}] is not a {what} (the first value must not exceed the second)"]


def _cross_checks(cfg: dict, ds: str, methods: list[str]) -> list[str]:
    """Checks between keys, on the settings dataset ``ds`` resolves to (its overrides applied); ``methods``:
    :func:`study_methods` of ``cfg``."""
    out = []
    def pre(sec):  # where a resolved value comes from
        over = cfg["datasets"][ds]["stage_overrides"].get(sec)
        return f"datasets.{ds}.stage_overrides.{sec} over {sec}" if over else sec
    t, e, x = section(cfg, ds, "teacher"), section(cfg, ds, "evaluate"), section(cfg, ds, "experts")
    late = [m for m in t["milestones"] if m >= t["epochs"]]
    if late:
        out.append(f"{pre('teacher')}.milestones: {late} at or after teacher.epochs = {t['epochs']}; every milestone "
                   f"must be an epoch below it")
    if t["warmup_epochs"] > t["epochs"]:
        out.append(f"{pre('teacher')}.warmup_epochs: {t['warmup_epochs']} > epochs {t['epochs']}")
    bad = [m for m in e["late_epochs"] or [] if m >= e["epochs"]]
    if bad:
        out.append(f"{pre('evaluate')}.late_epochs: {bad} at or after evaluate.epochs = {e['epochs']} "
                   f"(0-based epochs; the last is {e['epochs'] - 1})")
    if e["test_every"] > e["epochs"]:
        out.append(f"{pre('evaluate')}.test_every: {e['test_every']} > epochs {e['epochs']}")
    if "soft" in cfg["study"]["labels"] or "multisl" in cfg["study"]["labels"]:
        if e["loss"] == "ce":
            out.append(f"{pre('evaluate')}.loss: ce is the hard-label loss; soft and Multi-SL labels train with msegt or kl")
    if x["keep_epochs"] is not None and x["keep_epochs"] > x["epochs"]:
        out.append(f"{pre('experts')}.keep_epochs: {x['keep_epochs']} > experts.epochs {x['epochs']}")
    for sec, s in (("teacher", t), ("evaluate", e)):
        out += _range(f"{pre(sec)}.scale", s["scale"]) + _range(f"{pre(sec)}.ratio", s["ratio"])
    for method in methods:
        for ipc in cfg["study"]["ipc"]:
            ms = method_settings(cfg, ds, method, ipc)
            where = f"methods.{method} (dataset {ds}, IPC {ipc})"
            if "scale" in ms:
                out += _range(f"{where}.scale", ms["scale"])
            if ms["base"] == "datm":
                kept = x["epochs"] if x["keep_epochs"] is None else x["keep_epochs"]
                if ms["min_start_epoch"] >= ms["max_start_epoch"]:
                    out.append(f"{where}: min_start_epoch {ms['min_start_epoch']} must be below max_start_epoch "
                               f"{ms['max_start_epoch']}")
                if ms["current_max_start_epoch"] > ms["max_start_epoch"]:
                    out.append(f"{where}: current_max_start_epoch {ms['current_max_start_epoch']} > max_start_epoch "
                               f"{ms['max_start_epoch']}")
                if ms["max_start_epoch"] + ms["expert_epochs"] > kept:
                    out.append(f"{where}: max_start_epoch + expert_epochs = {ms['max_start_epoch'] + ms['expert_epochs']}"
                               f" needs expert snapshots the experts do not keep (experts keep epochs 0..{kept}); raise "
                               f"experts.keep_epochs / epochs or lower max_start_epoch")
    return sorted(set(out))


def read_config_file(path: str | Path, _chain: tuple = ()) -> dict:
    """One config file as a plain dict, its ``extends:`` chain resolved: ``extends: <file>`` (relative to
    this file) names a config this one is merged over, key by key. A file without ``extends`` stands
    alone — which is what every paper config does. YAML errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file.")
    with open(path) as fh:
        try:
            cfg = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: not valid YAML ({what}); fix the indentation or brackets there.") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys (study:, datasets:, ...), "
                          f"not a {type(cfg).__name__}.")
    parent = cfg.pop("extends", None)
    if parent is None:
        return cfg
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be the path of another config file, got {parent!r}.")
    parent_path = (path.parent / parent).resolve()
    if parent_path in _chain:
        raise ConfigError(f"{path}: extends {parent} makes a loop ({' -> '.join(map(str, _chain))}).")
    return deep_merge(read_config_file(parent_path, _chain + (path.resolve(),)), cfg)


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """The validated configuration of one or more config files (later files merged over earlier ones,
    then ``overrides``) — what ``snakemake --configfile A B --config k=v`` runs."""
    if not paths:
        raise ConfigError("no config file given.")
    cfg: dict = {}
    for p in paths:
        cfg = deep_merge(cfg, read_config_file(p))
    cfg = deep_merge(cfg, overrides or {})
    return validate_config(cfg, " + ".join(str(p) for p in paths))


# --------------------------------------------------------------------------------------------
# Helpers used by stages and by common.smk.

def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Temporal:
    """A temporal setting: condensed videos of ``t_c`` frames, the sampling of the clip the network
    sees from them (naive / segment / sliding), and the interpolation to the clip length when
    ``t_c`` is shorter (none / dup / linear)."""

    t_c: int
    sampling: str
    interpolation: str

    @property
    def tag(self) -> str:
        return f"tc{self.t_c}-{self.sampling}-{self.interpolation}"


_TEMPORAL_RE = re.compile(r"^tc([0-9]+)-(naive|segment|sliding)-(none|dup|linear)$")


def parse_temporal(tag: str) -> Temporal:
    m = _TEMPORAL_RE.match(tag)
    if not m:
        raise ConfigError(f"temporal setting '{tag}' is not of the form tc<T>-<naive|segment|sliding>-<none|dup|linear>")
    return Temporal(int(m.group(1)), m.group(2), m.group(3))


def model_settings(cfg: dict, arch: str) -> dict:
    """Construction settings (width, dropout) of network ``arch``."""
    return copy.deepcopy(cfg["models"][arch])


def method_settings(cfg: dict, dataset: str, method: str, ipc: int | None = None) -> dict:
    """Settings of ``method`` (a registered name or a variant with ``base:``) for one dataset and IPC."""
    if method not in cfg["methods"]:
        raise ConfigError(f"method '{method}' has no entry under methods")
    raw = cfg["methods"][method]
    base = raw.get("base", method)
    merged = deep_merge(cfg["methods"].get(base, {}), raw) if base != method else copy.deepcopy(raw)
    over = cfg["datasets"][dataset].get("method_overrides", {}).get(method, {})
    merged = deep_merge(merged, {k: v for k, v in over.items() if k != "ipc"})
    if ipc is not None:
        per_ipc = over.get("ipc", {})
        merged = deep_merge(merged, per_ipc.get(ipc, per_ipc.get(str(ipc), {})))
    merged["base"] = base
    merged.setdefault("needs", [])
    merged.setdefault("temporal", "tc8-naive-none")
    return merged


def section(cfg: dict, dataset: str, name: str) -> dict:
    """teacher / experts / evaluate section with the dataset's stage_overrides applied."""
    over = cfg["datasets"][dataset].get("stage_overrides", {}).get(name, {})
    return deep_merge(cfg[name], over)


def labeler_arch(cfg: dict, dataset: str, student_arch: str) -> str:
    """The architecture of the teacher that labels an evaluation (soft / Multi-SL): evaluate.labeler_arch,
    where ``student`` means a teacher of the student's own architecture (the reference's Table 9)."""
    lab = section(cfg, dataset, "evaluate")["labeler_arch"]
    return student_arch if lab == "student" else lab


def stage_settings(cfg: dict, stage: str, dataset: str, **wc: Any) -> dict:
    """The complete settings dict of one job of ``stage`` (everything but its file paths)."""
    ds = copy.deepcopy(cfg["datasets"][dataset])
    ds["name"] = dataset
    common = {"dataset": ds, "device": cfg["device"], "deterministic": cfg["deterministic"],
              "workdir": cfg["workdir"]}
    if stage in ("toy", "extract"):
        return common
    common["performance"] = copy.deepcopy(cfg["performance"])  # GPU fast paths (vdc/accel.py): device stages only
    if stage in ("teacher", "stats"):
        arch = wc["arch"]
        return {**common, "arch": arch, "model": model_settings(cfg, arch),
                "teacher": section(cfg, dataset, "teacher"), "given": ds["teachers"].get(arch)}
    if stage == "experts":
        ex = section(cfg, dataset, "experts")
        return {**common, "arch": ex["arch"], "model": model_settings(cfg, ex["arch"]), "experts": ex}
    if stage == "condense":
        method, ipc, seed = wc["method"], int(wc["ipc"]), int(wc["seed"])
        ms = method_settings(cfg, dataset, method, ipc)
        if "temporal" in wc:
            ms["temporal"] = wc["temporal"]
        archs = sorted({cfg["teacher"]["arch"], *ms.get("networks", [])})
        return {**common, "method": method, "ipc": ipc, "seed": seed, "settings": ms,
                "teacher_arch": cfg["teacher"]["arch"],
                "models": {a: model_settings(cfg, a) for a in archs},
                "experts_arch": cfg["experts"]["arch"],
                "experts_model": model_settings(cfg, cfg["experts"]["arch"])}
    if stage == "evaluate":
        ev = section(cfg, dataset, "evaluate")
        arch = wc["arch"]
        ev.update(labels=wc["labels"], loss=wc["loss"], cutmix=(wc["cutmix"] == "cutmix"))
        out = {**common, "arch": arch, "model": model_settings(cfg, arch), "evaluate": ev, "seed": int(wc["seed"])}
        if wc["labels"] != "hard":  # hard labels read no labeler: its settings must not rerun them
            lab = labeler_arch(cfg, dataset, arch)
            out.update(labeler_arch=lab, labeler_model=model_settings(cfg, lab))
        return out
    raise ConfigError(f"unknown stage '{stage}'")


def settings_json(settings: dict) -> str:
    """Canonical JSON (sorted keys) so that equal settings give equal Snakemake params."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
