from llm4brain.resume import Checkpoint
from llm4brain.runtime import keep_freed_memory, setup_logging
from llm4brain.sections import VideoConfig
from llm4brain.video.features import cache_features

setup_logging(snakemake.log[0])
keep_freed_memory()
p = snakemake.params
cache_features(
    snakemake.input[0],
    snakemake.output[0],
    VideoConfig.from_dict(p.video),
    p.seed,
    Checkpoint.for_snakemake(snakemake, ".h5"),
)
