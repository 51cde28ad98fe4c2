from llm4brain.distributed import launch
from llm4brain.resume import Checkpoint
from llm4brain.runtime import setup_logging
from llm4brain.sections import VideoLlmConfig

if __name__ == "__main__":  # not when the data-parallel processes' server imports this script
    setup_logging(snakemake.log[0])
    p = snakemake.params
    launch(
        "llm4brain.video_llm.train:train_video_llm",  # imported by the processes that run it, not by this one
        devices=snakemake.resources.devices,
        device=p.video_llm["train"]["device"],
        log_file=snakemake.log[0],
        feature_paths=list(snakemake.input.features),
        captions_path=snakemake.input.captions,
        out_dir=snakemake.output[0],
        train_segments=list(p.train_segments),
        video_llm=VideoLlmConfig.from_dict(p.video_llm),
        seed=p.seed,
        checkpoint=Checkpoint.for_snakemake(snakemake),
    )
