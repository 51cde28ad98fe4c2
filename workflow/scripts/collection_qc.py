from llm4brain.fmri.collections import collection_qc
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
collection_qc(snakemake.wildcards.collection, list(snakemake.input), snakemake.output[0])
