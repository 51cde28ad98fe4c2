from llm4brain.evaluate.report import plot_gallery
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
plot_gallery(
    snakemake.input.eval, dict(zip(p.segments, snakemake.input.stimuli, strict=True)), p.tr, snakemake.output[0]
)
