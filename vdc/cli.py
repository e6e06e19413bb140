"""Argument helpers shared by the stage modules.

Every stage takes its file paths as arguments and its settings either as ``--settings JSON`` (what
Snakemake passes: the output of :func:`vdc.config.stage_settings`) or as ``--config config.yaml``
plus the wildcards, from which the same dict is built.
"""
from __future__ import annotations

import argparse
import json

from vdc.config import ConfigError, load_config, stage_settings


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="the stage's settings as JSON (as Snakemake passes them)")
    g.add_argument("--config", help="a vdc config.yaml to build the settings from")
    p.add_argument("--dataset", help="dataset name (with --config)")


def resolve_settings(args: argparse.Namespace, stage: str, **wildcards) -> dict:
    if args.settings:
        try:
            return json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from None
    if not args.dataset:
        raise ConfigError("--config needs --dataset")
    cfg = load_config(args.config)
    return stage_settings(cfg, stage, args.dataset, **wildcards)
