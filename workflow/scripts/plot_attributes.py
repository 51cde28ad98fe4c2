from llm4brain.evaluate.report import plot_attributes
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
plot_attributes(snakemake.input[0], snakemake.output[0])
