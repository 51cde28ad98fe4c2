from llm4brain.runtime import setup_logging
from llm4brain.video_llm.captions import teacher_captions

setup_logging(snakemake.log[0])
p = snakemake.params
teacher_captions(snakemake.input.features, snakemake.input.video_llm, snakemake.output[0], p.segments, p.captions)
