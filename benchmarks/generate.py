"""Captions per second of batched generation against one caption at a time, on the demo's trained student.

    make demo && .venv/bin/python benchmarks/generate.py [--results results/r0] [--subject sub-01]

Decodes the subject's test fMRI with the student the demo trained (``results/r0/instruct/model`` on
``results/r0/video_llm``: the demo's one replicate, its data included), greedy and with ``evaluate``'s
default settings, once in batches of ``evaluate.batch_size`` (64) and once one clip at a time, on 2 CPU
threads. Prints both rates, their ratio,
and the share of captions that are identical (batching right-pads nothing here: every prompt has the same
length, so greedy captions agree up to float summation order).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llm4brain.instruct.student import load_student, student_inputs
from llm4brain.models.captioner import Captioner, generate_captions
from llm4brain.sections import EvaluateConfig

SETTINGS = EvaluateConfig(max_new_tokens=24, num_beams=1, repetition_penalty=1.0)


def rate(captioner: Captioner, tokens: torch.Tensor, batch_size: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    captions = generate_captions(captioner, tokens, SETTINGS.replace(batch_size=batch_size))
    return len(tokens) / (time.perf_counter() - start), captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/r0"))
    parser.add_argument("--subject", default="sub-01")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = args.results
    if not (results / "instruct" / "model").is_dir():
        raise SystemExit(f"{results}/instruct/model: no trained student; run `make demo` first")
    student = load_student(results / "instruct" / "model", results / "video_llm")
    inputs, _ = student_inputs(
        student.input_kind,
        [str(results / "fmri" / f"{args.subject}.h5")],
        [str(results / "align" / f"{args.subject}.h5")],
        "test",
        student.window,
    )
    tokens = torch.cat([student.encode(batch) for batch in inputs.batches(128)])
    rate(student.captioner, tokens[:4], 4)  # warm-up
    batched, batched_captions = rate(student.captioner, tokens, 64)
    single, single_captions = rate(student.captioner, tokens, 1)
    same = sum(a == b for a, b in zip(batched_captions, single_captions, strict=True)) / len(tokens)
    print(f"{len(tokens)} test clips of {args.subject}, greedy, up to {SETTINGS.max_new_tokens} new tokens")
    print(f"batched (64):       {batched:8.1f} captions/s")
    print(f"one at a time:      {single:8.1f} captions/s")
    print(f"batched / single:   {batched / single:8.2f}x")
    print(f"identical captions: {same:8.1%}")


if __name__ == "__main__":
    main()
