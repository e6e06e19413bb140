# Data rules: the generated toy dataset (format: toy) and frame extraction into one HDF5 per dataset.
# Stage code: vdc/data/toy.py, vdc/data/ingest.py, vdc/data/extract.py. User docs: docs/data.md.
import re

from vdc.data.ingest import annotation_files


def _toy_roots():
    """{toy root: dataset name} for every dataset with format toy (root = parent of its annotations)."""
    out = {}
    for name, ds in config["datasets"].items():
        if ds["format"] == "toy":
            ann = Path(ds["annotations"])
            root = str(ann.parent)
            if ann.name != "ucfTrainTestlist" or Path(ds["video_root"]) != ann.parent / "videos":
                raise WorkflowError(f"dataset '{name}' (format toy): set annotations: <root>/ucfTrainTestlist "
                                    f"and video_root: <root>/videos (the toy layout); got annotations: "
                                    f"{ds['annotations']}, video_root: {ds['video_root']}")
            out[root] = name
    return out


TOY_ROOTS = _toy_roots()


def toy_settings(wildcards):
    """Settings of the toy stage for the dataset generated under {root}."""
    return shlex.quote(settings_json(stage_settings(config, "toy", TOY_ROOTS[wildcards.root])))


def extract_inputs(wildcards):
    """The annotation files of a dataset (for toy datasets: the toy rule's outputs)."""
    return annotation_files(config["datasets"][wildcards.dataset])


if TOY_ROOTS:

    rule toy_dataset:
        output:
            PATHS["toy_done"],
            "{root}/ucfTrainTestlist/trainlist01.txt",
            "{root}/ucfTrainTestlist/testlist01.txt",
        params:
            code=code_for("toy"),
            settings=toy_settings,
        threads: 2
        log:
            log_file("toy_dataset", root="{root}"),
        benchmark:
            bench_file("toy_dataset", root="{root}")
        conda:
            CONDA_ENV
        wildcard_constraints:
            root="|".join(re.escape(r) for r in TOY_ROOTS),
        shell:
            "{VDC} toy --out {wildcards.root} --threads {threads} --settings {params.settings} > {log} 2>&1"


rule extract:
    input:
        extract_inputs,
    output:
        frames=pattern("frames"),
        report=pattern("frames_report"),
    params:
        code=code_for("extract"),
        settings=settings("extract"),
    threads: 4
    log:
        log_file("extract", dataset="{dataset}"),
    benchmark:
        bench_file("extract", dataset="{dataset}")
    conda:
        CONDA_ENV
    shell:
        "{VDC} extract --out {output.frames} --report {output.report} --threads {threads}"
        " --settings {params.settings} > {log} 2>&1"


rule frames:
    input:
        [frames_file(ds) for ds in STUDY["datasets"]],
