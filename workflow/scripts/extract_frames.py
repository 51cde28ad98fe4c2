from llm4brain.runtime import setup_logging
from llm4brain.sections import VideoConfig
from llm4brain.video.frames import extract_frames
from llm4brain.video.preprocessing import read_config

setup_logging(snakemake.log[0])
p = snakemake.params
extract_frames(
    snakemake.input.video,
    snakemake.output[0],
    p.tr,
    VideoConfig.from_dict(p.video),
    read_config(snakemake.input.config),
    snakemake.threads,
)
