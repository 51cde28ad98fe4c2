from llm4brain.evaluate.report import plot_fmri_qc
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
plot_fmri_qc(snakemake.input, snakemake.output[0])
