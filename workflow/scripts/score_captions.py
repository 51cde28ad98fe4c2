from llm4brain.evaluate.score import score_captions
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
out = snakemake.output
score_captions(
    snakemake.input.decoded + snakemake.input.ablated,
    snakemake.input.captions,
    out.metrics,
    out.identification,
    out.tests,
    out.ablation,
    p.heldout,
    p.evaluate,
    p.seed,
    snakemake.threads,
    out.per_clip,
)
