from llm4brain.evaluate.score import score_captions
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
score_captions(snakemake.input, snakemake.output[0], p.heldout, p.evaluate)
