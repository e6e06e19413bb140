# Expert trajectories for DATM (vdc/train/experts.py; file layouts in vdc/formats/experts.py).
# One job per expert (rule experts: one GPU each, so 20 experts run as 20 GPU / SLURM jobs), each
# resumable from <workdir>/experts/<job>/expert.pt; then a local CPU job (rule experts_index) writes the
# index experts.h5 that names them, the file a DATM condense job is given.
# An expert's job receives the experts section without num_experts: no expert's result depends on it,
# so raising it adds jobs and reruns none of the existing ones.

localrules:
    experts_index,


rule experts:
    input:
        frames=lambda wc: path("frames", dataset=wc.dataset),
    output:
        path("expert"),
    wildcard_constraints:
        expert=r"[0-9]+",
    params:
        code=code_for("experts"),
        settings=lambda wc: shlex.quote(settings_json({
            **(s := stage_settings(config, "experts", wc.dataset)),
            "experts": {k: v for k, v in s["experts"].items() if k != "num_experts"}})),
    log:
        log_file("experts", dataset="{dataset}", expert="{expert}"),
    benchmark:
        bench_file("experts", dataset="{dataset}", expert="{expert}")
    threads: config["threads"]["experts"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} experts --frames {{input.frames}} --out {{output}} --expert {{wildcards.expert}} "
        f"--threads {{threads}} --settings {{params.settings}} > {{log}} 2>&1"


rule experts_index:
    input:
        lambda wc: [path("expert", dataset=wc.dataset, expert=i)
                    for i in range(section(config, wc.dataset, "experts")["num_experts"])],
    output:
        path("experts"),
    params:
        code=code_for("experts"),
        settings=settings("experts"),
    log:
        log_file("experts_index", dataset="{dataset}"),
    conda:
        CONDA_ENV
    shell:
        f"{VDC} experts --index {{input}} --out {{output}} --settings {{params.settings}} > {{log}} 2>&1"
