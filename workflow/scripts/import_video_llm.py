from llm4brain.runtime import setup_logging
from llm4brain.sections import VideoLlmConfig
from llm4brain.video_llm.checkpoint import import_video_llm

setup_logging(snakemake.log[0])
p = snakemake.params
import_video_llm(
    checkpoint=snakemake.input[0],
    out_dir=snakemake.output[0],
    video_llm=VideoLlmConfig.from_dict(p.video_llm),
    frames_per_tr=p.frames_per_tr,
)
