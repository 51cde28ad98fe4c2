"""Memory and speed of streamed training data at collection scale (issue 19); prints ratios against the goals.

    .venv/bin/python benchmarks/scale.py            # full: ~10 GB of fMRI and ~20 GB of a Wen 2018 rehearsal
    .venv/bin/python benchmarks/scale.py --quick    # the same measurements at small sizes, in a few minutes
    .venv/bin/python benchmarks/scale.py --scales 1 4 --parts rss speed   # a part of the full run

Synthetic data in a temporary folder (deleted afterwards), written in the fmri and features artifact schemas:

- ``pretrain_scmbm`` peak RSS at 1×, 4× and 16× a collection of 59,412-grayordinate float32 frames (full:
  1× = 3 subjects × 900 frames, 16× = 10.3 GB on disk), each in a fresh process, with one ``train.buffer_mb``.
  Goal: 16× ≤ 1.25 × the 1× peak, and ≤ 3 GB.
- Steps/s of SC-MBM steps fed by the streaming loader against the in-memory loader on the 1× collection,
  loaders built beforehand. Goal ≥ 0.9.
- Preprocessing throughput (volumes/s) of a collection subject (``preprocess_collection_subject``) against
  the task-subject path (``preprocess_subject``) on the same Wen-size CIFTI runs. Goal ≥ 0.9.
- A Wen 2018-size rehearsal of ``pretrain_adaptor``: 3 subjects × (4,320 training + 1,200 test) samples ×
  59,412 grayordinates, ViT-g-shaped float16 tokens (4 frames × 257 × 1408 per clip) for 5,520 clips, a few
  steps at small model widths, then every latent written. Goal: peak RSS ≤ 6 GB. The design before streaming
  held every window and every segment's tokens in memory; their size is printed (arithmetic, not measured).

Model widths are small (the data path is what is measured): encoder dim 32, depth 1, 1-D patches of 128
grayordinates (SC-MBM) or 256 (alignment).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

GRAYORDINATES, WINDOW, FRAMES, TOKENS = 59412, 2, 4, (257, 1408)
SIZES = {  # frames per collection file, files at 1x, scmbm steps, buffer MiB; Wen: segments, TRs per segment
    "full": {
        "frames": 900,
        "files": 3,
        "steps": 20,
        "buffer_mb": 256,
        "train_segments": 18,
        "test_segments": 5,
        "trs": 240,
        "align_buffer_mb": 512,
        "preprocess_runs": 4,
    },
    "quick": {
        "frames": 30,
        "files": 3,
        "steps": 6,
        "buffer_mb": 8,
        "train_segments": 2,
        "test_segments": 1,
        "trs": 20,
        "align_buffer_mb": 32,
        "preprocess_runs": 2,
    },
}
ENCODER: dict[str, Any] = {
    "window": WINDOW,
    "tokenizer": {"channels": 4, "patch": 4, "vector_patch": 128},
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "dropout": 0.0,
}
QFORMER: dict[str, Any] = {
    "num_queries": 32,
    "hidden_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 128,
    "dropout": 0.1,
}
GB = 1e9


def peak_rss() -> float:
    """This process's peak resident memory (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def defaults() -> dict[str, Any]:
    """Every config section with the schema's defaults, as the workflow fills them."""
    from llm4brain.config_schema import read_schema, validate_config

    config: dict[str, Any] = {"data": {"segments": {"train": ["seg01"], "test": ["test01"]}}}
    validate_config(config, read_schema(Path(__file__).resolve().parents[1] / "config" / "schema.yaml"))
    return config


def write_fmri(path: Path, splits: dict[str, list[tuple[str, int]]], seed: int) -> None:
    """An fmri artifact of random z-scored grayordinates, rows chunked one by one as preprocess_fmri writes
    them, filled a run at a time."""
    from llm4brain.artifacts import atomic_h5, write_keys

    rng = np.random.default_rng(seed)
    with atomic_h5(path, "fmri") as f:
        for split, keys in splits.items():
            group = f.create_group(split)
            bold = group.create_dataset("bold", (len(keys), GRAYORDINATES), np.float32, chunks=(1, GRAYORDINATES))
            for start in range(0, len(keys), 300):
                stop = min(len(keys), start + 300)
                bold[start:stop] = rng.standard_normal((stop - start, GRAYORDINATES), np.float32)
            write_keys(group, [k[0] for k in keys], [k[1] for k in keys])


def collection_file(folder: Path, i: int, frames: int) -> str:
    """Collection subject i: three rest runs of ``frames / 3`` volumes, train split only (as
    preprocess_collection writes it)."""
    path = folder / f"rest-{i:03d}.h5"
    if not path.exists():
        write_fmri(path, {"train": [(f"run-{r}", t) for r in range(3) for t in range(frames // 3)]}, seed=i)
    return str(path)


def scmbm_params(size: dict[str, Any]) -> dict[str, Any]:
    scmbm = defaults()["scmbm"]
    scmbm["decoder"] = {"dim": 16, "depth": 1, "num_heads": 2}
    scmbm["train"].update(
        steps=size["steps"], batch_size=16, threads=2, warmup=2, checkpoint_every=0, buffer_mb=size["buffer_mb"]
    )
    return scmbm


def run_scmbm(paths: list[str], out: str, size: dict[str, Any]) -> float:
    """Child process: pretrain_scmbm on ``paths``; its peak RSS."""
    from llm4brain.scmbm.train import pretrain_scmbm
    from llm4brain.sections import EncoderConfig, ScmbmConfig

    pretrain_scmbm(
        fmri_paths=paths[:1],
        collection_paths=paths[1:],
        out_dir=out,
        encoder=EncoderConfig.from_dict(ENCODER),
        scmbm=ScmbmConfig.from_dict(scmbm_params(size)),
        seed=0,
    )
    return peak_rss()


def loader_speed(paths: list[str], size: dict[str, Any]) -> dict[str, float]:
    """Child process: SC-MBM steps/s fed by each loader (built beforehand), same model and batches."""
    import torch

    from llm4brain.fmri.stream import InMemorySamples, ShuffledStream, open_splits, row_stream
    from llm4brain.models.fmri_encoder import build_encoder
    from llm4brain.models.mbm import MaskedBrainModel
    from llm4brain.sections import EncoderConfig

    torch.set_num_threads(2)
    files = open_splits(paths)
    rows = [np.arange(f.n_rows) for f in files]
    loaders: dict[str, ShuffledStream | InMemorySamples] = {
        "stream": row_stream(files, rows, WINDOW, size["buffer_mb"], seed=0),
        "memory": InMemorySamples(files, rows, WINDOW, seed=0),
    }
    models, optimizers, generators, seconds = {}, {}, {}, dict.fromkeys(loaders, 0.0)
    for name in loaders:
        torch.manual_seed(0)
        encoder = build_encoder((GRAYORDINATES,), EncoderConfig.from_dict(ENCODER))
        models[name] = MaskedBrainModel(encoder, 16, 1, 2, 0.75)
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-3)
        generators[name] = torch.Generator().manual_seed(0)
    steps = size["steps"] * 3
    for step in range(steps + 1):  # interleaved, so that the shared machine's load falls on both alike
        for name, samples in loaders.items():
            start = time.perf_counter()
            loss, _ = models[name](samples.next(16)[1][:, 0], generators[name])
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            seconds[name] += (time.perf_counter() - start) if step else 0.0  # step 0 warms up
    return {name: steps / seconds[name] for name in loaders}


def wen_rehearsal(folder: Path, size: dict[str, Any]) -> tuple[float, float]:
    """Child process: pretrain_adaptor on Wen 2018-size data written to ``folder``; its peak RSS and the bytes
    the design before streaming held (every window and every segment's tokens)."""
    from llm4brain.align.train import train_brain_aligner
    from llm4brain.artifacts import atomic_h5
    from llm4brain.models.captioner import Captioner
    from llm4brain.models.tokenizer import train_word_tokenizer
    from llm4brain.models.video_llm import VideoQFormer, build_llm, qformer_config, save_teacher
    from llm4brain.sections import AlignConfig, EncoderConfig, VideoLlmLlmConfig, VideoLlmQformerConfig

    train = [f"seg{i:02d}" for i in range(1, size["train_segments"] + 1)]
    test = [f"test{i:02d}" for i in range(1, size["test_segments"] + 1)]
    trs = size["trs"]
    subjects = ["sub-01", "sub-02", "sub-03"]
    fmri = [folder / f"{s}.h5" for s in subjects]
    for i, path in enumerate(fmri):
        write_fmri(
            path,
            {"train": [(g, t) for g in train for t in range(trs)], "test": [(g, t) for g in test for t in range(trs)]},
            seed=100 + i,
        )
    rng = np.random.default_rng(0)
    features = []
    for segment in train + test:
        features.append(folder / f"{segment}.features.h5")
        with atomic_h5(features[-1], "features") as f:
            f.attrs["segment"] = segment
            tokens = f.create_dataset("tokens", (trs, FRAMES, *TOKENS), np.float16, chunks=(1, FRAMES, *TOKENS))
            for t in range(0, trs, 40):
                n = min(40, trs - t)
                tokens[t : t + n] = rng.standard_normal((n, FRAMES, *TOKENS), np.float32).astype(np.float16)
            f.create_dataset("tr", data=np.arange(trs, dtype=np.int32))
    template, prompt = "###Human: <Video>{video}</Video> {prompt} ###Assistant:", "Describe the clip."
    tokenizer = train_word_tokenizer(["a clip of a scene", template.replace("{video}", " ").format(prompt=prompt)])
    llm = build_llm(VideoLlmLlmConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tokenizer, 64)
    captioner = Captioner(llm, tokenizer, QFORMER["hidden_size"], template, prompt, 16)
    qformer = VideoQFormer(
        qformer_config(VideoLlmQformerConfig.from_dict(QFORMER), TOKENS[1]), FRAMES, QFORMER["num_queries"]
    )
    save_teacher(
        folder / "teacher", qformer, captioner, {"template": template, "prompt": prompt, "max_caption_tokens": 16}
    )
    config = defaults()
    align = {**config["align"], "heldout": ["sub-03"]}
    align["train"] = {
        **align["train"],
        "steps": 3,
        "batch_size": 8,
        "threads": 2,
        "warmup": 1,
        "checkpoint_every": 0,
        "val_fraction": 0.05,
        "eval_every": 3,
        "buffer_mb": size["align_buffer_mb"],
    }
    encoder = {**ENCODER, "tokenizer": {**ENCODER["tokenizer"], "vector_patch": 256}}
    train_brain_aligner(
        fmri_paths=[str(p) for p in fmri],
        feature_paths=[str(p) for p in features],
        teacher_dir=str(folder / "teacher"),
        model_dir=str(folder / "align"),
        latent_paths=[str(folder / f"{s}.latents.h5") for s in subjects],
        metrics_path=str(folder / "metrics.tsv"),
        subjects=subjects,
        encoder=EncoderConfig.from_dict(encoder),
        align=AlignConfig.from_dict(align),
        seed=0,
    )
    clips = (len(train) + len(test)) * trs
    before = clips * FRAMES * np.prod(TOKENS) * 2 + len(subjects) * clips * WINDOW * GRAYORDINATES * 4
    return peak_rss(), float(before)


def preprocessing_speed(folder: Path, n_runs: int) -> dict[str, float]:
    """Volumes/s of one subject's CIFTI runs (Wen-size, 240 kept of 246 volumes × 59,412 grayordinates)
    cleaned by the task path (``preprocess_subject``) and by the collection path
    (``preprocess_collection_subject``, the same runs as an unlabelled collection), best of two each."""
    from fmri_preprocess import KEEP, PARAMS, SEGMENTS, write_subject

    from llm4brain.fmri.collections import preprocess_collection_subject
    from llm4brain.fmri.preprocess import preprocess_subject
    from llm4brain.fmri.runs import RunLayout
    from llm4brain.sections import FmriConfig

    runs = write_subject(folder, n_runs)
    shown = {run.parent.parent.name for run in runs}
    segments = {split: [s for s in segs if s in shown] for split, segs in SEGMENTS.items()}
    layout = RunLayout.from_data({"layout": "wen2018", "wen2018": {"images": "cifti"}})
    volumes = len(runs) * KEEP
    best = {"task": float("inf"), "collection": float("inf")}
    for _ in range(2):
        start = time.perf_counter()
        preprocess_subject(
            "subject1",
            folder / "subject1",
            None,
            folder / "task.h5",
            segments,
            2.0,
            FmriConfig.from_dict(PARAMS),
            layout,
        )
        best["task"] = min(best["task"], time.perf_counter() - start)
        start = time.perf_counter()
        preprocess_collection_subject(
            collection="bench",
            subject="subject1",
            runs={f"run-{i}": run for i, run in enumerate(runs)},
            mask_path=None,
            out_path=folder / "collection.h5",
            qc_path=folder / "qc.tsv",
            tr=2.0,
            fmri=FmriConfig.from_dict(PARAMS),
            layout=layout,
        )
        best["collection"] = min(best["collection"], time.perf_counter() - start)
    return {path: volumes / seconds for path, seconds in best.items()}


def in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh process, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that it runs, not the goals")
    parser.add_argument("--tmp", default=None, help="folder for the temporary data (default: the system's)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="collection sizes, 1 first")
    parts = ["rss", "speed", "preprocess", "adaptor"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="llm4brain-scale-") as tmp:
        folder = Path(tmp)
        if "rss" in args.parts:
            peaks = {}
            for scale in args.scales:
                paths = [collection_file(folder, i, size["frames"]) for i in range(size["files"] * scale)]
                disk = sum(Path(p).stat().st_size for p in paths)
                peaks[scale] = in_child(run_scmbm, paths, str(folder / f"scmbm-{scale}"), size)
                print(
                    f"pretrain_scmbm {scale:>2}x ({disk / GB:.2f} GB on disk, buffer_mb {size['buffer_mb']}): "
                    f"peak RSS {peaks[scale] / GB:.2f} GB = {peaks[scale] / peaks[args.scales[0]]:.2f} x the "
                    f"{args.scales[0]}x peak (goal at 16x: <= 1.25 x and <= 3 GB)",
                    flush=True,
                )
            for path in folder.glob("rest-*.h5"):  # keep the 1x collection only
                if int(path.stem.split("-")[1]) >= size["files"]:
                    path.unlink()
        if "speed" in args.parts:
            paths = [collection_file(folder, i, size["frames"]) for i in range(size["files"])]
            speed = in_child(loader_speed, paths, size)
            print(
                f"SC-MBM steps/s on the 1x collection: streaming {speed['stream']:.2f}, in memory "
                f"{speed['memory']:.2f} -> ratio {speed['stream'] / speed['memory']:.2f} (goal >= 0.9)",
                flush=True,
            )
        for path in folder.glob("rest-*.h5"):
            path.unlink()
        if "preprocess" in args.parts:
            (folder / "preprocess").mkdir()
            speed = in_child(preprocessing_speed, folder / "preprocess", size["preprocess_runs"])
            print(
                f"preprocessing {size['preprocess_runs']} Wen-size CIFTI runs: collection path "
                f"{speed['collection']:.0f} volumes/s, task path {speed['task']:.0f} volumes/s -> ratio "
                f"{speed['collection'] / speed['task']:.2f} (goal >= 0.9)",
                flush=True,
            )
        if "adaptor" in args.parts:
            (folder / "wen").mkdir()
            peak, before = in_child(wen_rehearsal, folder / "wen", size)
            print(
                f"pretrain_adaptor Wen 2018 rehearsal ({size['train_segments']} + {size['test_segments']} segments "
                f"x {size['trs']} TRs, 3 subjects): peak RSS {peak / GB:.2f} GB (goal <= 6 GB); the design before "
                f"streaming held {before / GB:.1f} GB of windows and tokens (arithmetic)"
            )


if __name__ == "__main__":
    main()
