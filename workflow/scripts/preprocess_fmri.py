from llm4brain.fmri.preprocess import preprocess_subject
from llm4brain.fmri.runs import RunLayout
from llm4brain.runtime import setup_logging
from llm4brain.sections import FmriConfig

setup_logging(snakemake.log[0])
p = snakemake.params
preprocess_subject(
    snakemake.wildcards.subject,
    p.subject_dir,
    snakemake.input.get("mask"),
    snakemake.output[0],
    p.segments,
    p.tr,
    FmriConfig.from_dict(p.fmri),
    RunLayout.from_data(p.layout),
)
