from llm4brain.evaluate.summary import summarize_replicates
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
summarize_replicates(
    metrics_paths=snakemake.input.metrics,
    per_clip_paths=snakemake.input.per_clip,
    replicates=p.replicates,
    n_permutations=p.n_permutations,
    seed=p.seed,
    summary_path=snakemake.output.summary,
    tests_path=snakemake.output.tests,
)
