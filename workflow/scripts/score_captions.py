from llm4brain.evaluate.score import score_captions
from llm4brain.runtime import setup_logging
from llm4brain.sections import EvaluateConfig

setup_logging(snakemake.log[0])
p = snakemake.params
out = snakemake.output
score_captions(
    eval_paths=snakemake.input.decoded + snakemake.input.ablated,
    captions_path=snakemake.input.captions,
    out_path=out.metrics,
    identification_path=out.identification,
    tests_path=out.tests,
    ablation_path=out.ablation,
    heldout=p.heldout,
    evaluate=EvaluateConfig.from_dict(p.evaluate),
    seed=p.seed,
    workers=snakemake.threads,
    per_clip_path=out.per_clip,
)
