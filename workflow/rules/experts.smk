# Expert trajectories for DATM (vdc/train/experts.py; file layouts in vdc/formats/experts.py).
# One job per expert (rule experts: one GPU each, so 20 experts run as 20 GPU / SLURM jobs), each
# resumable from <workdir>/experts/<job>/expert.pt; then a CPU job (rule experts_index) writes the
# index experts.h5 that names them, the file a DATM condense job is given.
from vdc.formats.experts import expert_path

localrules:
    experts_index,


def expert_file(dataset, expert):
    """The file of one expert (its job's output), next to the dataset's experts index."""
    return str(expert_path(path("experts", dataset=dataset), expert))


def expert_files(dataset):
    """Every expert file of a dataset (experts.num_experts of its resolved experts section)."""
    return [expert_file(dataset, i) for i in range(section(config, dataset, "experts")["num_experts"])]


def expert_job_settings(wildcards):
    """The settings of one expert's job: the stage's without experts.num_experts, which no expert's
    result depends on (raising it adds jobs and reruns none of the existing ones)."""
    s = stage_settings(config, "experts", wildcards.dataset)
    s["experts"] = {k: v for k, v in s["experts"].items() if k != "num_experts"}
    return shlex.quote(settings_json(s))


rule experts:
    input:
        frames=lambda wc: path("frames", dataset=wc.dataset),
    output:
        expert_file("{dataset}", "{expert}"),
    wildcard_constraints:
        expert=r"[0-9]+",
    params:
        code=code_for("experts"),
        settings=expert_job_settings,
    log:
        log_file("experts", dataset="{dataset}", expert="{expert}"),
    benchmark:
        bench_file("experts", dataset="{dataset}", expert="{expert}")
    threads: lambda wc: section(config, wc.dataset, "experts")["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} experts --frames {{input.frames}} --out {{output}} --expert {{wildcards.expert}} "
        f"--settings {{params.settings}} > {{log}} 2>&1"


rule experts_index:
    input:
        lambda wc: expert_files(wc.dataset),
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
