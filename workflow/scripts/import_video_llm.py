from llm4brain.runtime import setup_logging
from llm4brain.video_llm.checkpoint import import_video_llm

setup_logging(snakemake.log[0])
p = snakemake.params
import_video_llm(snakemake.input[0], snakemake.output[0], p.video_llm, p.frames_per_tr)
