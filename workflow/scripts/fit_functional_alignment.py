from llm4brain.fmri.functional_alignment import fit_shared_response
from llm4brain.runtime import setup_logging
from llm4brain.sections import AlignFunctionalAlignmentConfig

setup_logging(snakemake.log[0])
p = snakemake.params
fit_shared_response(
    fmri_paths=snakemake.input.fmri,
    subjects=p.subjects,
    heldout=p.heldout,
    out_path=snakemake.output[0],
    functional_alignment=AlignFunctionalAlignmentConfig.from_dict(p.functional_alignment),
    seed=p.seed,
)
