from llm4brain.runtime import setup_logging
from llm4brain.sections import VideoConfig
from llm4brain.video.preprocessing import write_config

setup_logging(snakemake.log[0])
write_config(VideoConfig.from_dict(snakemake.params.video), snakemake.output[0])
