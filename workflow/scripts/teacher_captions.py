from llm4brain.runtime import setup_logging
from llm4brain.sections import CaptionsConfig
from llm4brain.video_llm.captions import teacher_captions

setup_logging(snakemake.log[0])
p = snakemake.params
teacher_captions(
    feature_paths=snakemake.input.features,
    teacher_dir=snakemake.input.video_llm,
    out_path=snakemake.output[0],
    segments=p.segments,
    captions_config=CaptionsConfig.from_dict(p.captions),
)
