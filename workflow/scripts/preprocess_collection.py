from llm4brain.fmri.collections import preprocess_collection_subject
from llm4brain.fmri.runs import RunLayout
from llm4brain.runtime import setup_logging
from llm4brain.sections import FmriConfig

setup_logging(snakemake.log[0])
p = snakemake.params
preprocess_collection_subject(
    collection=snakemake.wildcards.collection,
    subject=snakemake.wildcards.participant,
    runs=p.runs,
    mask_path=snakemake.input.get("mask"),
    out_path=snakemake.output.bold,
    qc_path=snakemake.output.qc,
    tr=p.tr,
    fmri=FmriConfig.from_dict(p.fmri),
    layout=RunLayout.from_data(p.layout),
    on_bad_run=p.on_bad_run,
)
