"""Input-pipeline overhead of the align stage's training step, as a share of the step (goal ≤ 10 %).

    .venv/bin/python benchmarks/train_step.py

Builds the demo-size problem in memory (3 subjects, 2 labelled, 16 × 16 × 12 grids, 2-TR windows, the
demo's encoder and a teacher Q-Former sized as the demo's) and times, over the same seeded batches,
``AlignBatches.draw`` (choosing clips and repeats, gathering the windows) against a whole optimiser step
(draw, forward, the loss terms, backward, AdamW). Prints both and their ratio; ≤ 0.10 meets the goal.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from llm4brain.align.losses import mmd
from llm4brain.align.model import BrainAligner
from llm4brain.align.train import AlignBatches, alignment_terms
from llm4brain.models.video_llm import VideoQFormer, qformer_config

GRID, WINDOW, CLIPS, REPEATS, BATCH, STEPS = (16, 16, 12), 2, 360, 2, 32, 30
ENCODER = {"window": WINDOW, "tokenizer": {"channels": 16, "patch": 8, "vector_patch": 16}, "dim": 64, "depth": 2,
           "num_heads": 4, "mlp_ratio": 2.0, "dropout": 0.3}
ALIGN = {"encoder_tuning": "full", "temperature": 0.07,
         "adaptor": {"kind": "bottleneck", "bottleneck": 16, "scale_init": 1e-3, "lora_r": 8, "lora_alpha": 16}}
QFORMER = {"num_queries": 8, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    keys = [(f"seg{c // 30:02d}", c % 30) for c in range(CLIPS)]
    rows_of: dict[str, dict[tuple[str, int], list[int]]] = {}
    bold = {}
    for s in ("sub-01", "sub-02", "sub-03"):
        bold[s] = torch.randn(CLIPS * REPEATS, WINDOW, *GRID)
        rows_of[s] = defaultdict(list)
        for i in range(CLIPS * REPEATS):
            rows_of[s][keys[i % CLIPS]].append(i)
    labelled = ["sub-01", "sub-02"]
    qformer = VideoQFormer(qformer_config(QFORMER, 64), num_frames=4, num_queries=QFORMER["num_queries"])
    model = BrainAligner(GRID, ENCODER, ALIGN, qformer).train()
    targets = torch.randn(CLIPS, QFORMER["num_queries"], QFORMER["hidden_size"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def batches() -> AlignBatches:
        return AlignBatches(bold, rows_of, labelled, keys, bold["sub-03"], BATCH, torch.Generator().manual_seed(1))

    draw = batches()
    start = time.perf_counter()
    for _ in range(STEPS):
        draw.draw()
    draw_s = (time.perf_counter() - start) / STEPS

    step = batches()
    start = time.perf_counter()
    for _ in range(STEPS):
        pick, inputs, target = step.draw()
        terms, pooled = alignment_terms(model, len(labelled), pick, inputs, targets[pick])
        loss = sum(terms.values()) + mmd(pooled, model(target).mean(1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step_s = (time.perf_counter() - start) / STEPS
    print(f"align step (batch {BATCH} clips x {len(labelled)} subjects + {BATCH} held-out windows of "
          f"{WINDOW} x {GRID}): input pipeline {draw_s * 1e3:.1f} ms of a {step_s * 1e3:.0f} ms step -> "
          f"overhead {draw_s / step_s:.3f} (goal <= 0.10)")


if __name__ == "__main__":
    main()
