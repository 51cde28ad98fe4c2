import gc
import os

from snakemake.utils import min_version

min_version("9.0")

# HDF5 file locking fails on NFS/Lustre, where cluster jobs read and write the artifacts; every artifact is
# written under a temporary name and renamed, so no two processes ever open one file for writing.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


# A config given with --configfile is complete on its own (config/wen2018.yaml, config/bids.yaml: schema
# defaults fill the rest); without one, the embedded demo runs.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


# Rules marked `localrule: True` (table merges, plots, unpacking a wheel) run on the submit host under any
# executor: at Wen 2018 size each takes seconds and under 0.15 GB (docs/benchmarks.md), less than a queue wait.


include: "rules/common.smk"
include: "rules/ablations.smk"
include: "rules/inputs.smk"
include: "rules/collections.smk"
include: "rules/demo.smk"
include: "rules/fmri.smk"
include: "rules/functional_alignment.smk"
include: "rules/video.smk"
include: "rules/video_llm.smk"
include: "rules/align.smk"
include: "rules/instruct.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        final_outputs(),


# Snakemake's modules and the workflow's definitions live until the process exits: frozen, the cyclic garbage
# collector no longer walks them, and each snakemake process (a cluster job starts two) ends 0.3 s sooner.
gc.freeze()
