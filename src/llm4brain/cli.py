"""``llm4brain``: command-line tools around a trained pipeline (the workflow itself runs with snakemake)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _decode(args: argparse.Namespace) -> int:
    from llm4brain.artifacts import atomic_path
    from llm4brain.evaluate.new_run import decode_run, write_srt

    table = decode_run(
        args.subject,
        args.bold,
        args.events,
        args.model,
        replicate=args.replicate,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    if args.srt:
        with atomic_path(args.srt) as tmp:
            write_srt(table, tmp)
    print(f"{len(table)} captions → {args.out}" + (f" and {args.srt}" if args.srt else ""))
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="llm4brain", description=__doc__.split(":", 1)[1].strip())
    commands = main.add_subparsers(dest="command", required=True)
    decode = commands.add_parser(
        "decode",
        help="caption every TR of one new fMRI run",
        description="Preprocess one BOLD run exactly as the subject's training runs were (mask, detrend, "
        "z-score, HRF lag), then write one decoded caption per TR of the stimulus it shows.",
    )
    decode.add_argument("--subject", required=True, help="a subject the pipeline was trained or adapted on")
    decode.add_argument("--bold", required=True, type=Path, help="4-D BOLD NIfTI of the run")
    decode.add_argument(
        "--events", required=True, type=Path, help="BIDS events TSV of the run (onset, duration, segment or stim_file)"
    )
    decode.add_argument(
        "--model", default=Path("results"), type=Path, help="the workflow's results folder (default: results)"
    )
    decode.add_argument(
        "--replicate",
        type=int,
        help="the seed of the replicate whose student decodes (results/r{seed}/); needed when there are several",
    )
    decode.add_argument(
        "--out", required=True, type=Path, help="captions TSV to write (segment, tr, start, end, caption)"
    )
    decode.add_argument("--srt", type=Path, help="also write SubRip subtitles timed to the stimulus")
    decode.add_argument("--max-new-tokens", type=int, default=24)
    decode.add_argument("--num-beams", type=int, default=1)
    decode.set_defaults(run=_decode)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:  # InputError and ArtifactError are ValueErrors
        print(f"llm4brain {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
