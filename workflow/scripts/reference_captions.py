from llm4brain.runtime import setup_logging
from llm4brain.text.captions import reference_captions

setup_logging(snakemake.log[0])
p = snakemake.params
reference_captions(snakemake.input[0], snakemake.output[0], p.segments, p.captions)
