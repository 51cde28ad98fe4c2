from llm4brain.evaluate.decode import decode_ablation
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
decode_ablation(
    snakemake.wildcards.subject,
    snakemake.wildcards.ablation,
    snakemake.input.fmri,
    snakemake.input.latents,
    snakemake.input.captions,
    snakemake.input.video_llm,
    snakemake.input.student,
    snakemake.output[0],
    p.heldout,
    p.evaluate,
    p.seed,
)
