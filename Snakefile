# vdc: video action dataset condensation — the study as a Snakemake workflow.
# Rules live in workflow/rules/; config access and target lists in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.20")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/condense.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/edc.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        all_targets(),
    default_target: True
