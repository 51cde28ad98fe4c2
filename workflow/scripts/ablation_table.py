from llm4brain.align.ablation import ablation_table
from llm4brain.runtime import LOG, setup_logging

setup_logging(snakemake.log[0])
table = ablation_table(snakemake.input.full, snakemake.input.ablations, snakemake.params.ablations, snakemake.output[0])
LOG.info("ablation table:\n%s", table.to_string(index=False))
