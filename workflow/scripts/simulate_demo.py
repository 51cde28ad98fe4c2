from pathlib import Path

from llm4brain.demo.simulate import simulate_demo
from llm4brain.runtime import setup_logging
from llm4brain.sections import DataSegmentsConfig, DemoConfig

setup_logging(snakemake.log[0])
p = snakemake.params
simulate_demo(
    out_dir=Path(snakemake.output.scans[0]).parent.parent,
    subjects=p.subjects,
    segments=DataSegmentsConfig.from_dict(p.segments),
    tr=p.tr,
    demo=DemoConfig.from_dict(p.demo),
    seed=p.seed,
)
