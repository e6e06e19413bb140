# The condense stage: one job per (dataset, method, IPC, temporal setting, seed).
# Inputs besides the frames come from the method's `needs` (common.smk: method_needs): trained
# teachers (teacher_<arch>), EDC statistics (stats_<arch>), DATM experts, an init set (EDC init: rded).


def condense_inputs(wildcards):
    return {"frames": frames_file(wildcards.dataset), **method_needs(wildcards)}


def condense_args(wildcards, input):
    """--teacher/--stats ARCH=PATH, --experts, --init from the job's named inputs."""
    args = []
    for name, path in input.items():
        if name.startswith("teacher_"):
            args.append(f"--teacher {name[len('teacher_'):]}={shlex.quote(path)}")
        elif name.startswith("stats_"):
            args.append(f"--stats {name[len('stats_'):]}={shlex.quote(path)}")
        elif name in ("experts", "init"):
            args.append(f"--{name} {shlex.quote(path)}")
    return " ".join(args)


rule condense:
    input:
        unpack(condense_inputs),
    output:
        pattern("condensed"),
    params:
        code=code_for("condense"),
        settings=settings("condense"),
        extra=condense_args,
    log:
        log_file("condense", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}", seed="{seed}"),
    benchmark:
        bench_file("condense", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}", seed="{seed}")
    threads: 2
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{GPU_RUN} {VDC} condense --frames {input.frames} --out {output} {params.extra} --threads {threads} "
        "--settings {params.settings} > {log} 2>&1"


rule condensed:
    """Every condensed set of the study (study.datasets x methods x ipc x seeds)."""
    input:
        study_condensed(),
