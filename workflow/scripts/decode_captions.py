from llm4brain.evaluate.decode import decode_captions
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
decode_captions(
    snakemake.wildcards.subject,
    snakemake.input.fmri,
    snakemake.input.latents,
    snakemake.input.pool_fmri,
    snakemake.input.pool_latents,
    snakemake.input.features,
    snakemake.input.captions,
    snakemake.input.video_llm,
    snakemake.input.student,
    snakemake.output[0],
    p.heldout,
    p.evaluate,
    p.seed,
)
