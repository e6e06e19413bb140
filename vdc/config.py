"""Configuration: loading, schema validation with defaults, and the settings each stage receives.

One function, :func:`stage_settings`, builds the exact settings dict a stage needs from the study
configuration. Snakemake passes that dict to the stage as a JSON ``params`` value (so a change to
a stage's own settings reruns that stage only), and ``python -m vdc <stage> --config config.yaml``
builds the same dict, so a stage run by hand behaves exactly as under Snakemake.

Output file layout (relative to ``results``) is defined once here, in :data:`PATHS`.
"""
from __future__ import annotations

import copy
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
    "experts": "{results}/experts/{dataset}/experts.h5",
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
    """Where the evaluation of one run lives — the one function the workflow's targets and the tables
    both use. Unset parts take the study's values: loss ``ce`` for hard labels, else ``evaluate.loss``;
    CutMix ``evaluate.cutmix``; the method's temporal setting."""
    ev = cfg["evaluate"]
    if loss is None:
        loss = "ce" if labels == "hard" else ev["loss"]
    if cutmix is None:
        cutmix = ev["cutmix"]
    if temporal is None:
        temporal = method_settings(cfg, dataset, method, int(ipc))["temporal"]
    return path("eval", results=cfg["results"], dataset=dataset, method=method, ipc=ipc, temporal=temporal,
                seed=seed, arch=arch, labels=labels, loss=loss, cutmix="cutmix" if cutmix else "nocutmix")


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
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema, filling defaults. Raises ConfigError."""
    schema = load_schema()
    validator = _default_filling_validator()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            msg = err.message
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                msg += f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {where}: {msg}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)
                          + "\nFix these keys (the schema is workflow/schemas/config.schema.yaml).")
    _check_references(config, source)
    return config


def _check_references(cfg: dict, source: str) -> None:
    for name in cfg["study"]["datasets"]:
        if name not in cfg["datasets"]:
            raise ConfigError(f"{source}: study.datasets names '{name}', which is not under datasets "
                              f"(defined: {', '.join(cfg['datasets'])}).")
    if cfg["study"].get("full_data_ipc") and "full" not in cfg["methods"]:
        raise ConfigError(f"{source}: study.full_data_ipc is set but methods has no 'full' entry; add `full: {{}}`.")
    for name in list(cfg["study"]["methods"]) + list(cfg["study"].get("edc_networks", [])):
        if name not in cfg["methods"]:
            raise ConfigError(f"{source}: study names method '{name}', which has no entry under methods "
                              f"(defined: {', '.join(cfg['methods'])}).")


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
    return deep_merge({"width": 1.0, "dropout": 0.5}, cfg.get("models", {}).get(arch, {}))


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
    if stage in ("teacher", "stats"):
        arch = wc["arch"]
        return {**common, "arch": arch, "model": model_settings(cfg, arch),
                "teacher": section(cfg, dataset, "teacher")}
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
