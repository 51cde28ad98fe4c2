from llm4brain.fmri.functional_alignment import align_subject
from llm4brain.runtime import setup_logging
from llm4brain.sections import AlignFunctionalAlignmentConfig

setup_logging(snakemake.log[0])
align_subject(
    fmri_path=snakemake.input.fmri,
    srm_path=snakemake.input.srm,
    subject=snakemake.wildcards.subject,
    out_path=snakemake.output[0],
    functional_alignment=AlignFunctionalAlignmentConfig.from_dict(snakemake.params.functional_alignment),
)
