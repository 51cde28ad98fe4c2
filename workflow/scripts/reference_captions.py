from llm4brain.runtime import setup_logging
from llm4brain.sections import CaptionsConfig
from llm4brain.text.captions import reference_captions

setup_logging(snakemake.log[0])
p = snakemake.params
reference_captions(
    tsv=snakemake.input[0],
    out_path=snakemake.output[0],
    segments=p.segments,
    captions_config=CaptionsConfig.from_dict(p.captions),
)
