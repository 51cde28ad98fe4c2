"""Training samples streamed from HDF5: the windows and order it serves, its memory bound, that the test split
never enters pretraining, and that training on it matches training from memory and survives kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DEFAULTS, TRAIN_DEFAULTS
from safetensors.torch import load_file

from llm4brain.align.windows import windows
from llm4brain.artifacts import ArtifactError, atomic_h5, write_keys
from llm4brain.fmri import stream as stream_module
from llm4brain.fmri.stream import (
    BoldSplit,
    InMemorySamples,
    ShuffledStream,
    capacity_rows,
    clip_stream,
    iter_windows,
    open_splits,
    row_stream,
    split_rows,
)
from llm4brain.scmbm.train import pretrain_scmbm
from llm4brain.sections import AlignConfig, EncoderConfig, ScmbmConfig

SENTINEL = 1e6  # every test-split value; no training sample may contain it
GRID = (16,)
ENCODER = {
    **DEFAULTS["encoder"],
    "window": 2,
    "tokenizer": {"channels": 4, "patch": 4, "vector_patch": 4},
    "dim": 16,
    "depth": 1,
    "num_heads": 2,
    "dropout": 0.0,
}
SCMBM = {
    "mask_ratio": 0.5,
    "decoder": {"dim": 16, "depth": 1, "num_heads": 2},
    "train": {
        **TRAIN_DEFAULTS,
        "steps": 12,
        "batch_size": 8,
        "threads": 1,
        "warmup": 2,
        "checkpoint_every": 3,
        "lr": 3e-3,
    },
}


def runs(segments: list[str], n_tr: int, repeats: int = 1) -> tuple[list[str], list[int]]:
    """Keys of runs written one after another, as preprocess_fmri writes them."""
    keys = [(s, t) for _ in range(repeats) for s in segments for t in range(n_tr)]
    return [k[0] for k in keys], [k[1] for k in keys]


def write_fmri(
    path: Path,
    train: tuple[list[str], list[int]],
    test: tuple[list[str], list[int]] | None,
    seed: int = 0,
    bold: np.ndarray | None = None,
) -> Path:
    """A tiny fmri artifact, rows chunked one by one like preprocess_fmri's; test rows all SENTINEL."""
    rng = np.random.default_rng(seed)
    with atomic_h5(path, "fmri") as f:
        for split, (segment, tr) in [("train", train), ("test", test)] if test else [("train", train)]:
            group = f.create_group(split)
            data = (
                bold
                if bold is not None and split == "train"
                else rng.standard_normal((len(tr), *GRID)).astype(np.float32)
            )
            if split == "test":
                data = np.full((len(tr), *GRID), SENTINEL, np.float32)
            group.create_dataset("bold", data=data, chunks=(1, *GRID) if len(tr) else None)
            write_keys(group, segment, tr)
    return path


def test_streamed_windows_are_the_in_memory_windows_and_never_cross_a_run(tmp_path):
    segment, tr = runs(["a", "b"], 5, repeats=2)
    segment, tr = segment + ["c"], tr + [0]  # a one-TR run at the end
    path = write_fmri(tmp_path / "s.h5", (segment, tr), None)
    files = open_splits([str(path)])
    expected = windows(load_bold(path), list(zip(segment, tr, strict=True)), 3)
    got = torch.cat(list(iter_windows(files[0], np.arange(len(tr)), 3, 4))).numpy()
    np.testing.assert_array_equal(got, expected)
    stream = row_stream(files, [np.arange(len(tr))], 3, 1.0, seed=0)
    units, batch = stream.next(len(tr))
    np.testing.assert_array_equal(batch[:, 0].numpy(), expected[units.numpy()])


def load_bold(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f["train/bold"][:]


def test_small_buffer_bounds_memory_and_serves_every_sample_once_per_epoch(tmp_path):
    """A buffer of a few blocks: it never holds more rows than buffer_mb allows, yet each epoch serves every
    sample exactly once, in an order that differs between epochs and is the same on every rerun; two ranks
    split each batch between them."""
    paths = [str(write_fmri(tmp_path / f"s{i}.h5", runs(["a", "b", "c"], 40), None, seed=i)) for i in range(3)]
    files = open_splits(paths)
    n = sum(f.n_rows for f in files)
    buffer_mb = 40 * files[0].row_bytes / 2**20  # 40 rows of 360
    capacity = capacity_rows(buffer_mb, files)
    assert capacity == 40

    def epochs(stream, count):
        return [stream.next(n)[0].numpy() for _ in range(count)]

    stream = row_stream(files, [np.arange(f.n_rows) for f in files], 2, buffer_mb, seed=3)
    first, second = epochs(stream, 2)
    assert sorted(first) == sorted(second) == list(range(n))
    assert not np.array_equal(first, second)
    assert len(stream.groups(0)) > 3 and stream.peak_rows <= capacity
    np.testing.assert_array_equal(
        epochs(row_stream(files, [np.arange(f.n_rows) for f in files], 2, buffer_mb, seed=3), 1)[0], first
    )
    ranks = [
        row_stream(files, [np.arange(f.n_rows) for f in files], 2, buffer_mb, seed=3, rank=r, world_size=2)
        for r in range(2)
    ]
    for start in range(0, 96, 12):
        both = [r.next(12) for r in ranks]
        np.testing.assert_array_equal(
            torch.stack([b[0] for b in both], 1).reshape(-1).numpy(), first[start : start + 12]
        )
    with pytest.raises(ValueError, match="buffer_mb"):
        row_stream(files, [np.arange(f.n_rows) for f in files], 2, files[0].row_bytes / 2**20, seed=3)


def test_ranks_share_batches_that_straddle_groups_and_epochs_at_odd_offsets(tmp_path):
    """Batches of 7 over a buffer of a few groups, for two epochs and more: a batch that ends one group (or
    epoch) and starts the next is shared by position in the batch, not in the group, so the ranks' shares
    interleave back into the one-process batch for 2 and 3 processes alike."""
    paths = [str(write_fmri(tmp_path / f"s{i}.h5", runs(["a", "b"], 20), None, seed=i)) for i in range(2)]
    files = open_splits(paths)
    rows = [np.arange(f.n_rows) for f in files]
    buffer_mb = 25 * files[0].row_bytes / 2**20

    def stream(rank: int = 0, world_size: int = 1) -> ShuffledStream:
        return row_stream(files, rows, 2, buffer_mb, seed=4, rank=rank, world_size=world_size)

    straddles = 0
    for world_size in (2, 3):
        one, ranks = stream(), [stream(r, world_size) for r in range(world_size)]
        for _ in range(2 * sum(f.n_rows for f in files) // 7 + 1):
            group, epoch = one.group, one.epoch
            units, windows = one.next(7)
            straddles += (one.group, one.epoch) != (group, epoch) and one.position > 0  # into the next
            for r, share in enumerate(rank.next(7) for rank in ranks):
                assert torch.equal(share[0], units[r::world_size]) and torch.equal(share[1], windows[r::world_size])
    assert straddles > 4 and one.epoch >= 2


def test_a_full_buffer_serves_what_memory_serves(tmp_path):
    paths = [str(write_fmri(tmp_path / f"s{i}.h5", runs(["a", "b"], 30, 2), None, seed=i)) for i in range(2)]
    files = open_splits(paths)
    rows = [split_rows(f.n_rows, 0.1, 5, i)[0] for i, f in enumerate(files)]
    streamed, memory = row_stream(files, rows, 2, 64.0, seed=1), InMemorySamples(files, rows, 2, seed=1)
    for size in (7, 50, 100, 13):  # across epochs
        a, b = streamed.next(size), memory.next(size)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_clip_stream_gives_every_subject_the_same_clip(tmp_path):
    """Subject s's bold encodes (segment, tr) in each row: each sample's S windows start at the same clip,
    on a repeat of it, and follow its run."""
    paths = []
    for s, repeats in enumerate((2, 1)):
        segment, tr = runs(["a", "b"], 12, repeats)
        codes = np.array(["ab".index(g) * 100 + t for g, t in zip(segment, tr, strict=True)], np.float32)
        paths.append(
            str(
                write_fmri(
                    tmp_path / f"s{s}.h5", (segment, tr), runs(["t"], 3), bold=np.repeat(codes[:, None], GRID[0], 1)
                )
            )
        )
    files = open_splits(paths)
    clips = [(g, t) for g in "ab" for t in range(12)]
    keys = [list(zip(*runs(["a", "b"], 12, r), strict=True)) for r in (2, 1)]
    repeats = [[np.array([i for i, k in enumerate(subject) if k == c]) for c in clips] for subject in keys]
    buffer_mb = 32 * files[0].row_bytes / 2**20  # blocks of one clip (2 subjects x 2 TRs), groups of 8
    stream = clip_stream(files, repeats, 2, buffer_mb, seed=0)
    units, batch = stream.next(len(clips) * 2)
    assert sorted(units.tolist()) == sorted(2 * list(range(len(clips))))
    code = np.array(["ab".index(g) * 100 + t for g, t in clips])[units.numpy()]
    assert (batch[:, :, 0, 0].numpy() == code[:, None]).all()  # (n, S): each subject's window starts at the clip
    follows = np.minimum(code + 1, code // 100 * 100 + 11)  # then the next TR of its run, the last one repeated
    assert (batch[:, :, 1, 0].numpy() == follows[:, None]).all()
    assert len(stream.groups(0)) == 3 and stream.peak_rows <= capacity_rows(buffer_mb, files) == 32


def test_test_split_never_enters_pretraining(tmp_path, monkeypatch):
    """Test rows hold SENTINEL; every sample pretrain_scmbm's loader yields, in training and validation, of a
    task subject and a collection subject, is checked."""
    seen = []
    next_batch, windows_of = stream_module.ShuffledStream.next, stream_module.iter_windows

    def recording_next(self, batch_size):
        units, batch = next_batch(self, batch_size)
        seen.append(batch)
        return units, batch

    def recording_windows(*args, **kwargs):
        for batch in windows_of(*args, **kwargs):
            seen.append(batch)
            yield batch

    monkeypatch.setattr(stream_module.ShuffledStream, "next", recording_next)
    monkeypatch.setattr("llm4brain.scmbm.train.iter_windows", recording_windows)
    task = write_fmri(tmp_path / "sub-01.h5", runs(["a", "b"], 20), runs(["t"], 20))
    collection = write_fmri(tmp_path / "rest.h5", runs(["run-1"], 30), None, seed=1)
    params = {**SCMBM, "train": {**SCMBM["train"], "steps": 8, "val_fraction": 0.2, "eval_every": 4}}
    pretrain_scmbm(
        fmri_paths=[str(task)],
        collection_paths=[str(collection)],
        out_dir=str(tmp_path / "scmbm"),
        encoder=EncoderConfig.from_dict(ENCODER),
        scmbm=ScmbmConfig.from_dict(params),
        seed=0,
    )
    assert len(seen) > 8 and sum(len(b) for b in seen) > 8 * 8
    assert all((b.abs() < SENTINEL / 2).all() for b in seen)
    assert (tmp_path / "scmbm" / "encoder.safetensors").exists()


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_streaming_and_in_memory_pretraining_give_identical_weights(tmp_path, val_fraction):
    paths = [
        str(write_fmri(tmp_path / f"sub-0{i}.h5", runs(["a", "b"], 12, 2), runs(["t"], 5), seed=i)) for i in range(2)
    ]
    params = {**SCMBM, "train": {**SCMBM["train"], "val_fraction": val_fraction, "eval_every": 5}}
    for in_memory in (False, True):
        pretrain_scmbm(
            fmri_paths=paths,
            out_dir=str(tmp_path / f"memory-{in_memory}"),
            encoder=EncoderConfig.from_dict(ENCODER),
            scmbm=ScmbmConfig.from_dict(params),
            seed=0,
            in_memory=in_memory,
        )
    streamed, memory = (load_file(tmp_path / f"memory-{m}" / "encoder.safetensors") for m in (False, True))
    assert streamed.keys() == memory.keys()
    for key in streamed:
        assert torch.equal(streamed[key], memory[key]), key
    pd.testing.assert_frame_equal(
        *(pd.read_csv(tmp_path / f"memory-{m}" / "train_log.tsv", sep="\t") for m in (False, True))
    )


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from llm4brain.fmri import stream
    from llm4brain.scmbm.train import pretrain_scmbm
    from llm4brain.resume import Checkpoint
    from llm4brain.sections import EncoderConfig, ScmbmConfig

    out, kill_at = sys.argv[1], int(sys.argv[2])
    calls = []
    next_batch = stream.ShuffledStream.next

    def next_or_die(self, batch_size):
        calls.append(self.state_dict())
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # what a cluster does at a time limit: mid-epoch, mid-buffer
        return next_batch(self, batch_size)

    stream.ShuffledStream.next = next_or_die
    pretrain_scmbm(fmri_paths=PATHS, out_dir=out, encoder=EncoderConfig.from_dict(ENCODER),
                   scmbm=ScmbmConfig.from_dict(PARAMS), seed=0, checkpoint=Checkpoint(CKPT, "scmbm-job"))
    print(calls[-1])
""")


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_kill9_mid_epoch_then_rerun_ends_bit_identical(tmp_path, loader_workers):
    paths = [str(write_fmri(tmp_path / f"sub-0{i}.h5", runs(["a", "b"], 16), runs(["t"], 4), seed=i)) for i in range(2)]
    files = open_splits(paths)
    buffer_mb = 20 * files[0].row_bytes / 2**20  # 20 of 64 rows: groups of a few blocks, epochs of 8 steps
    params = {
        **SCMBM,
        "train": {
            **SCMBM["train"],
            "steps": 14,
            "buffer_mb": buffer_mb * (1 + loader_workers),
            "val_fraction": 0.1,
            "loader_workers": loader_workers,
        },
    }
    script = tmp_path / "train.py"
    script.write_text(
        SCRIPT.replace("PATHS", repr(paths))
        .replace("ENCODER", repr(ENCODER))
        .replace("PARAMS", repr(params))
        .replace("CKPT", repr(str(tmp_path / "scmbm.pt")))
    )

    def run(out: str, kill_at: int = -1) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path / out), str(kill_at)],
            capture_output=True,
            text=True,
            check=False,
        )

    straight = run("straight")
    assert straight.returncode == 0, straight.stderr
    assert run("killed", kill_at=11).returncode == -9
    saved = torch.load(tmp_path / "scmbm.pt", weights_only=True)
    assert saved["step"] == 9 and saved["stateful"][0]["epoch"] == 1 and saved["stateful"][0]["group"] > 0
    assert run("killed").returncode == 0 and not (tmp_path / "scmbm.pt").exists()
    a, b = (load_file(tmp_path / out / "encoder.safetensors") for out in ("straight", "killed"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(
        *(pd.read_csv(tmp_path / out / "train_log.tsv", sep="\t") for out in ("straight", "killed"))
    )


def test_split_rows_is_seeded_and_exact():
    train, val = split_rows(50, 0.2, 3, 1)
    assert len(val) == 10 and sorted([*train, *val]) == list(range(50))
    assert np.array_equal(val, split_rows(50, 0.2, 3, 1)[1]) and not np.array_equal(val, split_rows(50, 0.2, 3, 2)[1])


def test_bold_split_reads_runs_of_rows(tmp_path):
    path = write_fmri(tmp_path / "s.h5", runs(["a"], 10), None)
    split = BoldSplit(path)
    out = np.empty((4, *GRID), np.float32)
    split.read(np.array([1, 2, 5, 9]), out)
    np.testing.assert_array_equal(out, load_bold(path)[[1, 2, 5, 9]])


def write_features(path: Path, segment: str, n_tr: int, seed: int) -> str:
    """Cached video tokens (n_tr, F=2, T=5, D=16) of one segment, one clip per chunk like cache_features."""
    rng = np.random.default_rng(seed)
    with atomic_h5(path, "features") as f:
        f.attrs["segment"] = segment
        f.create_dataset("tokens", data=rng.standard_normal((n_tr, 2, 5, 16)).astype(np.float16), chunks=(1, 2, 5, 16))
        f.create_dataset("tr", data=np.arange(n_tr, dtype=np.int32))
    return str(path)


def test_sample_rows_read_a_batch_as_the_split_in_memory_gives_it(tmp_path):
    """Random batches (repeats, any order, two files) read from disk equal the same samples taken from every
    window in memory: what instruct_llm and decoding read instead of holding the data."""
    from llm4brain.fmri.stream import SampleRows

    layouts = [runs(["a", "b"], 7, repeats=2), runs(["b"], 4, repeats=3)]  # runs end at different rows
    paths = [write_fmri(tmp_path / f"s{i}.h5", layout, None, seed=i) for i, layout in enumerate(layouts)]
    files = open_splits([str(p) for p in paths])
    keys = [list(zip(*layout, strict=True)) for layout in layouts]
    memory = np.concatenate([windows(load_bold(p), k, 3) for p, k in zip(paths, keys, strict=True)])
    file_index = np.repeat([0, 1], [f.n_rows for f in files])
    rows = np.concatenate([np.arange(f.n_rows) for f in files])
    samples = SampleRows(files, file_index, rows, 3)
    pick = np.random.default_rng(0).integers(0, len(samples), 40)
    np.testing.assert_array_equal(samples.take(pick).numpy(), memory[pick])
    np.testing.assert_array_equal(torch.cat(list(samples.batches(5))).numpy(), memory)
    assert SampleRows(files, file_index, rows, None).take(pick).shape == (40, *GRID)  # tokens: no window axis


def test_feature_files_read_clips_in_the_order_asked(tmp_path):
    """Clips of several segments, out of order and repeated, equal the tokens in memory; the files are only
    opened, not held; a TR past a segment's end is named."""
    from llm4brain.artifacts import FeatureFiles

    paths = [write_features(tmp_path / f"{s}.h5", s, 6, seed=i) for i, s in enumerate(["a", "b"])]
    features = FeatureFiles(paths)
    assert features.n_tr == {"a": 6, "b": 6} and features.clip_shape == (2, 5, 16)
    memory = {s: np.random.default_rng(i).standard_normal((6, 2, 5, 16)).astype(np.float16) for i, s in enumerate("ab")}
    keys = [("b", 3), ("a", 5), ("b", 0), ("a", 5), ("a", 1)]
    np.testing.assert_array_equal(features.clips(keys), np.stack([memory[s][t] for s, t in keys]))
    with pytest.raises(ArtifactError, match=r"b\.h5: no TR 6 in 6 cached TRs"):
        features.clips([("b", 6)])
    with pytest.raises(ArtifactError, match="no cached features for segment 'c'"):
        features.clips([("c", 0)])


SUBJECTS = ["sub-01", "sub-02", "sub-03"]


def adaptor_inputs(tmp_path: Path, dropout: float = 0.1) -> dict:
    """pretrain_adaptor's arguments but the outputs: a tiny teacher, three segments' tokens, two labelled
    subjects (one with two repeats) and a held-out one, a buffer of a few clips (several groups an epoch)
    and a validation split."""
    from test_models import PROMPT, TEMPLATE, tiny_teacher

    from llm4brain.models.video_llm import save_teacher

    qformer, captioner = tiny_teacher(dropout=dropout)
    save_teacher(
        tmp_path / "teacher", qformer, captioner, {"template": TEMPLATE, "prompt": PROMPT, "max_caption_tokens": 16}
    )
    features = [
        write_features(tmp_path / f"{s}.features.h5", s, n, i)
        for i, (s, n) in enumerate([("a", 8), ("b", 8), ("t", 4)])
    ]
    fmri = [
        str(write_fmri(tmp_path / f"{s}.h5", runs(["a", "b"], 8, repeats), runs(["t"], 4), seed=i))
        for i, (s, repeats) in enumerate(zip(SUBJECTS, (2, 1, 1), strict=True))
    ]
    row_bytes = open_splits(fmri)[0].row_bytes
    params = {
        **DEFAULTS["align"],
        "heldout": ["sub-03"],
        "train": {
            **TRAIN_DEFAULTS,
            "steps": 6,
            "batch_size": 4,
            "threads": 1,
            "val_fraction": 0.25,
            "eval_every": 3,
            "buffer_mb": 48 * row_bytes / 2**20,
        },
    }
    return {
        "fmri_paths": fmri,
        "feature_paths": features,
        "teacher_dir": str(tmp_path / "teacher"),
        "subjects": SUBJECTS,
        "encoder": ENCODER,
        "align": params,
        "seed": 0,
    }


def typed(inputs: dict) -> dict:
    """:func:`adaptor_inputs` with its sections typed, as ``pretrain_adaptor`` takes them (tests edit the
    dicts first)."""
    encoder, align = EncoderConfig.from_dict(inputs["encoder"]), AlignConfig.from_dict(inputs["align"])
    return {**inputs, "encoder": encoder, "align": align}


def adaptor_outputs(out: Path) -> dict:
    return {
        "model_dir": str(out / "model"),
        "latent_paths": [str(out / f"{s}.h5") for s in SUBJECTS],
        "metrics_path": str(out / "metrics.tsv"),
    }


def assert_same_latents(a: Path, b: Path) -> None:
    import h5py

    for s in SUBJECTS:
        with h5py.File(a / f"{s}.h5", "r") as x, h5py.File(b / f"{s}.h5", "r") as y:
            for split in ("train", "test"):
                np.testing.assert_array_equal(x[f"{split}/tokens"][:], y[f"{split}/tokens"][:])


def test_pretrain_adaptor_streams_its_samples_and_reruns_identically(tmp_path):
    """The aligner trains on its streams, validates and writes every subject's latents, twice identically."""
    from llm4brain.align.train import train_brain_aligner

    inputs = adaptor_inputs(tmp_path)
    for run in ("first", "second"):
        train_brain_aligner(**typed(inputs), **adaptor_outputs(tmp_path / run))
    log = pd.read_csv(tmp_path / "first" / "model" / "train_log.tsv", sep="\t")
    assert len(log) == 6 and log["val_loss"].notna().sum() == 2 and {"domain", "contrastive"} <= set(log.columns)
    assert set(pd.read_csv(tmp_path / "first" / "metrics.tsv", sep="\t")["subject"]) == set(SUBJECTS)
    import h5py

    for s in SUBJECTS:
        with h5py.File(tmp_path / "first" / f"{s}.h5", "r") as f:
            assert f["train/tokens"].shape == (16 * (2 if s == "sub-01" else 1), 4, 32)
            assert f["test/tokens"].shape == (4, 4, 32)
    assert_same_latents(tmp_path / "first", tmp_path / "second")


ADAPTOR_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from llm4brain.fmri import stream
    from llm4brain.align.train import train_brain_aligner
    from llm4brain.resume import Checkpoint
    from llm4brain.sections import AlignConfig, EncoderConfig

    inputs, out, kill_at = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), int(sys.argv[3])
    inputs.update(encoder=EncoderConfig.from_dict(inputs["encoder"]),
                  align=AlignConfig.from_dict(inputs["align"]))
    calls = []
    next_batch = stream.ShuffledStream.next

    def next_or_die(self, batch_size):
        calls.append(1)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return next_batch(self, batch_size)

    stream.ShuffledStream.next = next_or_die
    train_brain_aligner(**inputs, model_dir=str(out / "model"), latent_paths=[str(out / f"{s}.h5") for s in SUBJECTS],
                     metrics_path=str(out / "metrics.tsv"), checkpoint=Checkpoint(CKPT, "align-job"))
""")


def test_pretrain_adaptor_killed_mid_epoch_resumes_bit_identical(tmp_path):
    """Both streams (labelled clips, held-out windows) resume where the checkpoint left them."""
    inputs = adaptor_inputs(tmp_path)
    inputs["align"]["train"].update(steps=10, checkpoint_every=5)
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    script = tmp_path / "align.py"
    script.write_text(
        ADAPTOR_SCRIPT.replace("SUBJECTS", repr(SUBJECTS)).replace("CKPT", repr(str(tmp_path / "align.pt")))
    )

    def run(out: str, kill_at: int = -1) -> int:
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path / "inputs.json"), str(tmp_path / out), str(kill_at)],
            capture_output=True,
            text=True,
            check=False,
        ).returncode

    assert run("straight") == 0
    assert run("killed", kill_at=2 * 7 + 1) == -9  # two draws a step: killed in step 7, after the step-5 checkpoint
    saved = torch.load(tmp_path / "align.pt", weights_only=True)
    assert saved["step"] == 5 and [s["epoch"] for s in saved["stateful"]] == [1, 1]  # 20 of 12 clips, of 16 rows
    assert all(s["group"] or s["position"] for s in saved["stateful"])  # both mid-epoch
    assert run("killed") == 0 and not (tmp_path / "align.pt").exists()
    pd.testing.assert_frame_equal(
        *(pd.read_csv(tmp_path / out / "model" / "train_log.tsv", sep="\t") for out in ("straight", "killed"))
    )
    assert_same_latents(tmp_path / "straight", tmp_path / "killed")


def test_a_file_without_rows_adds_no_samples(tmp_path):
    """A collection subject whose every run was skipped has an empty train split: it streams nothing; files
    with no rows at all are an error naming them."""
    rows = write_fmri(tmp_path / "rows.h5", runs(["a"], 6), None)
    empty = write_fmri(tmp_path / "empty.h5", ([], []), None)
    files = open_splits([str(empty), str(rows)])
    assert files[0].n_rows == 0
    units, batch = row_stream(files, [np.arange(f.n_rows) for f in files], 2, 1.0, seed=0).next(6)
    assert sorted(units.tolist()) == list(range(6)) and batch.shape == (6, 1, 2, *GRID)
    with pytest.raises(ArtifactError, match="no training samples in .*empty.h5"):
        row_stream(files[:1], [np.arange(0)], 2, 1.0, seed=0)
