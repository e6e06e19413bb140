"""``python -m vdc.bench <name> [options]`` — dispatch to vdc/bench/<name>.py (add_arguments/main)."""
from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = {
    "extract": "videos/s and frames/s of extraction at 1 and 2 workers, bytes per stored frame",
    "protocol": "clips/s of the bare student step, the full protocol step and the test pass; the bf16 ceiling",
    "datm": "time and memory of trajectory matching, naive vs bounded (recompute) mode; gradient agreement",
    "edc": "time per iteration and peak memory of EDC with one and three networks, fp32 and bf16",
    "costs": "per-step costs of a config's jobs on this device: the bench file of python -m vdc plan",
    "gpucheck": "parts of scripts/gpu-check.sh: one UCF101 evaluation, the paper-scale smoke run, the report",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    epilog = "benchmarks:\n" + "\n".join(f"  {k:<9} {v}" for k, v in BENCHES.items())
    top = argparse.ArgumentParser(prog="python -m vdc.bench", epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("name", choices=list(BENCHES), metavar="name")
    ns = top.parse_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    mod = importlib.import_module(f"vdc.bench.{ns.name}")
    p = argparse.ArgumentParser(prog=f"python -m vdc.bench {ns.name}", description=BENCHES[ns.name])
    mod.add_arguments(p)
    from vdc.errors import UserError, debug_enabled

    try:
        return int(mod.main(p.parse_args(argv[1:])) or 0)
    except UserError as exc:  # a bad input file or setting: one line, as python -m vdc prints it
        if debug_enabled():
            raise
        print(f"vdc.bench {ns.name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
