from llm4brain.fmri.functional_alignment import align_subject
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
align_subject(
    fmri_path=snakemake.input.fmri,
    srm_path=snakemake.input.srm,
    subject=snakemake.wildcards.subject,
    out_path=snakemake.output[0],
    params=snakemake.params.functional_alignment,
)
