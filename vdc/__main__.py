"""``python -m vdc <stage> ...``: run one pipeline stage by hand (Snakemake runs the same commands).

Each stage module exposes ``add_arguments(parser)`` and ``main(args)``; it is imported only when
its stage runs, so ``python -m vdc --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

STAGES = {
    "toy": ("vdc.data.toy", "generate the synthetic action dataset (real H.264 videos, UCF101 layout)"),
    "extract": ("vdc.data.extract", "decode a dataset's videos into one frames HDF5"),
    "teacher": ("vdc.train.teacher", "train a network on the full training split (the 'Full dataset' row)"),
    "experts": ("vdc.train.experts", "train expert trajectories for DATM"),
    "stats": ("vdc.condense.edc_stats", "per-class BatchNorm input statistics of a trained network (EDC)"),
    "condense": ("vdc.condense.stage", "condense a dataset with one method at one IPC and seed"),
    "evaluate": ("vdc.evaluate", "train a fresh student on a condensed set under the unified protocol"),
    "tables": ("vdc.tables", "build the paper's tables and figures (one study each) from the evaluation JSONs"),
    "report": ("vdc.report", "draw the report's figures: learning curves, condensed-set strips and GIFs"),
    "export": ("vdc.export", "write a condensed set as playable MP4 / GIF files, one per class"),
    "gpu-lease": ("vdc.gpulease", "run a command on a leased free GPU (multi-GPU workstations)"),
    "settings": ("vdc.settings", "print the fully resolved config, or one stage's settings, as a job will run them"),
    "plan": ("vdc.plan", "jobs, device-hours and peak memory per rule of a config, before running it"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("VDC_JOBSERVER") and argv and argv[0] in STAGES and argv[0] != "gpu-lease":
        from vdc.jobserver import run_remote

        status = run_remote(argv)  # the stage in a child of the local job server (vdc/jobserver.py)
        if status is not None:
            return status
    epilog = "stages:\n" + "\n".join(f"  {k:<10} {v[1]}" for k, v in STAGES.items())
    top = argparse.ArgumentParser(prog="python -m vdc", description="vdc: video action dataset condensation",
                                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("stage", choices=list(STAGES), metavar="stage", help="one of the stages below")
    top.add_argument("args", nargs=argparse.REMAINDER, help="the stage's own arguments (see: <stage> --help)")
    ns = top.parse_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    module = importlib.import_module(STAGES[ns.stage][0])
    parser = argparse.ArgumentParser(prog=f"python -m vdc {ns.stage}", description=STAGES[ns.stage][1],
                                     epilog="--debug (or VDC_DEBUG=1) shows the traceback of a user error")
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    from vdc.errors import UserError, debug_enabled
    from vdc.utils import setup_logging

    setup_logging()
    if getattr(args, "torch_threads", False) and args.threads:  # --threads is torch's (not worker processes)
        from vdc.utils import set_threads

        set_threads(args.threads)
    try:
        return int(module.main(args) or 0)
    except UserError as exc:
        if debug or debug_enabled():
            raise
        print(f"vdc {ns.stage}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
