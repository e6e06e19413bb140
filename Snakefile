# vdc: video action dataset condensation — the study as a Snakemake workflow.
# Rules live in workflow/rules/; config access and target lists in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.20")


# The default study is config.yaml. A config given with --configfile stands alone: it is NOT merged
# into config.yaml (so a paper config never inherits the toy values); a file that wants another as its
# base says `extends: <file>` (common.smk resolves it). --config key=value still applies on top.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/condense.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        all_targets(),
    default_target: True
