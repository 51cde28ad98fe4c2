from llm4brain.evaluate.report import plot_scores, plot_training
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
plot_scores(dict(zip(p.replicates, snakemake.input.metrics, strict=True)), snakemake.output.scores)
logs: dict[str, list[str]] = {}
for name, path in zip(p.names, snakemake.input.logs, strict=True):
    logs.setdefault(name, []).append(path)  # every replicate's run of a training rule in one panel
plot_training(logs, snakemake.output.training)
