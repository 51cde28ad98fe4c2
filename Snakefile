from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/fmri.smk"
include: "rules/video.smk"
include: "rules/video_llm.smk"
include: "rules/align.smk"
include: "rules/instruct.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        final_outputs(),
