from llm4brain.evaluate.report import plot_scores, plot_training
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
plot_scores(snakemake.input.metrics, snakemake.output.scores)
plot_training(dict(zip(snakemake.params.names, snakemake.input.logs, strict=True)), snakemake.output.training)
