"""Argument helpers shared by the stage modules.

Every stage takes its file paths as arguments and its settings either as ``--settings JSON`` (what
Snakemake passes: the output of :func:`vdc.config.stage_settings`) or as ``--config config.yaml``
plus the wildcards, from which the same dict is built. Either way the resolved settings are logged
once, on one line of canonical JSON, at the start of the job's log (Snakemake no longer prints the
command line with its ``--settings`` on the console: profiles/default has ``printshellcmds: false``).
"""
from __future__ import annotations

import argparse
import json
import logging

from vdc.config import ConfigError, load_config, settings_json, stage_settings

log = logging.getLogger("vdc.settings")


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    if not any(a.dest == "threads" for a in p._actions):  # extract / toy: their own --threads (processes)
        p.add_argument("--threads", type=int, help="torch CPU threads of this job (the rule's threads:, from the "
                                                   "config's threads section)")
        p.set_defaults(torch_threads=True)  # python -m vdc sets torch's threads from --threads
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--settings", help="the stage's settings as JSON (as Snakemake passes them)")
    g.add_argument("--config", help="a vdc config.yaml to build the settings from")
    p.add_argument("--dataset", help="dataset name (with --config)")


def resolve_settings(args: argparse.Namespace, stage: str, **wildcards) -> dict:
    """The stage's settings from ``--settings`` or ``--config``/``--dataset`` (+ wildcards), logged once."""
    if args.settings:
        try:
            settings = json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from None
    else:
        if not args.dataset:
            raise ConfigError("--config needs --dataset")
        settings = stage_settings(load_config(args.config), stage, args.dataset, **wildcards)
    log.info("%s settings: %s", stage, settings_json(settings))
    return settings
