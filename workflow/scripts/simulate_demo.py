from pathlib import Path

from llm4brain.demo.simulate import simulate_demo
from llm4brain.runtime import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
simulate_demo(Path(snakemake.output.scans[0]).parent.parent, p.subjects, p.segments, p.tr, p.demo, p.seed)
