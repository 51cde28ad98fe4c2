from llm4brain.evaluate.attributes import score_attributes
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
score_attributes(
    snakemake.input.decoded + snakemake.input.ablated,
    snakemake.input.scenes,
    snakemake.output[0],
    snakemake.params.heldout,
)
