# The statistics stage (EDC): per-class BatchNorm-input statistics of one trained network over the real
# training clips (layout: vdc/formats/stats.py; stage code: vdc/condense/edc_stats.py). The condense rule asks for one file per network
# an EDC variant condenses with (common.smk: method_needs -> stats_<arch>).


rule stats:
    input:
        frames=lambda wc: path("frames", dataset=wc.dataset),
        teacher=lambda wc: path("teacher", dataset=wc.dataset, arch=wc.arch),
    output:
        path("stats"),
    params:
        code=code_for("stats"),
        settings=settings("stats"),
    log:
        log_file("stats", dataset="{dataset}", arch="{arch}"),
    benchmark:
        bench_file("stats", dataset="{dataset}", arch="{arch}")
    threads: config["threads"]["stats"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} stats --frames {{input.frames}} --teacher {{input.teacher}} --out {{output}} "
        f"--threads {{threads}} --settings {{params.settings}} > {{log}} 2>&1"
