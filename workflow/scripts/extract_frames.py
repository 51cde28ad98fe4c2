from llm4brain.runtime import setup_logging
from llm4brain.video.frames import extract_frames

setup_logging(snakemake.log[0])
p = snakemake.params
extract_frames(snakemake.input[0], snakemake.output[0], p.tr, p.video)
