"""The embedded demo dataset: real formats, deterministic, and the scene grammar."""

from __future__ import annotations

import os

import av
import nibabel as nib
import numpy as np
import pandas as pd
from conftest import TINY_DEMO, TINY_SEGMENTS, TINY_SUBJECTS

from llm4brain.demo.brain import N_FEATURES, canonical_hrf, make_subject, roi_mask, template_maps
from llm4brain.demo.render import render_segment, write_mp4
from llm4brain.demo.scenes import sample_timeline
from llm4brain.demo.simulate import presentations, simulate_demo
from llm4brain.sections import DataSegmentsConfig, DemoConfig


def test_layout_and_formats(tiny_demo):
    for segment in TINY_SEGMENTS["train"] + TINY_SEGMENTS["test"]:
        assert (tiny_demo / "stimuli" / f"{segment}.mp4").stat().st_size > 0
    captions = pd.read_csv(tiny_demo / "captions.tsv", sep="\t")
    assert len(captions) == 3 * TINY_DEMO["trs_per_segment"]
    assert captions["caption"].str.contains("moving").all()
    runs = sorted((tiny_demo / "sub-01" / "func").glob("*_bold.nii.gz"))
    assert len(runs) == len(presentations(TINY_SEGMENTS, TINY_DEMO["train_repeats"], TINY_DEMO["test_repeats"]))
    img = nib.load(runs[0])
    assert img.ndim == 4 and img.shape[:3] == tuple(TINY_DEMO["grid"])
    assert img.header.get_zooms()[3] == 2.0 and img.header.get_xyzt_units() == ("mm", "sec")
    events = pd.read_csv(str(runs[0]).replace("_bold.nii.gz", "_events.tsv"), sep="\t")
    assert list(events.columns[:2]) == ["onset", "duration"] and events["segment"].iloc[0] in captions["segment"].values
    expected_volumes = sum(TINY_DEMO["rest_trs"]) + TINY_DEMO["trs_per_segment"]
    assert img.shape[3] == expected_volumes


def test_same_seed_same_data(tiny_demo, tmp_path):
    again = tmp_path / "demo"
    simulate_demo(
        out_dir=again,
        subjects=TINY_SUBJECTS[:1],
        segments=DataSegmentsConfig.from_dict(TINY_SEGMENTS),
        tr=2.0,
        demo=DemoConfig.from_dict(TINY_DEMO),
        seed=7,
    )
    first = sorted((tiny_demo / "sub-01" / "func").glob("*_bold.nii.gz"))[0]
    second = again / "sub-01" / "func" / first.name
    np.testing.assert_array_equal(nib.load(first).get_fdata(), nib.load(second).get_fdata())
    assert (tiny_demo / "captions.tsv").read_text() == (again / "captions.tsv").read_text()


def test_subjects_differ(tiny_demo):
    a = nib.load(sorted((tiny_demo / "sub-01" / "func").glob("*_bold.nii.gz"))[0]).get_fdata()
    b = nib.load(sorted((tiny_demo / "sub-02" / "func").glob("*_bold.nii.gz"))[0]).get_fdata()
    assert not np.allclose(a, b)


def test_timeline_scene_lengths():
    rng = np.random.default_rng(0)
    timeline = sample_timeline(rng, 40, (2, 3))
    assert len(timeline) == 40
    runs, count = [], 1
    for prev, cur in zip(timeline, timeline[1:], strict=False):
        if cur is prev:
            count += 1
        else:
            runs.append(count)
            count = 1
    assert all(2 <= r <= 3 for r in runs)


def test_hrf_peaks_near_five_seconds():
    hrf = canonical_hrf(0.5)
    assert 4.0 <= np.argmax(hrf) * 0.5 <= 6.0


def noise_free_responses(regime: str, subject: int, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A simulated subject's noise-free BOLD signal (T, V) to ``features``, and the voxels it covers."""
    from scipy import signal

    grid = (10, 10, 8)
    mask = roi_mask(grid)
    template = template_maps(1, grid)
    model = make_subject(template, mask, 100 + subject, 0.3, 1, 1.0, 1.0, features, regime, 0.4)
    hrf = canonical_hrf(2.0, peak=model.hrf[0], undershoot=model.hrf[1], ratio=model.hrf[2])
    bold = signal.lfilter(hrf, [1.0], model.features(features) @ model.weights, axis=0)
    return bold, model.scale > 0


def linear_transfer_r2(regime: str) -> float:
    """R² on held-out TRs of the best linear map (least squares) from subject 0's voxels to subject 1's: how
    much of one subject a shared linear space could explain from another, without noise."""
    features = np.random.default_rng(0).uniform(-0.5, 0.5, (600, N_FEATURES)).astype(np.float32)
    (a, covered), (b, _) = (noise_free_responses(regime, s, features) for s in (0, 1))
    a = a[:, covered]
    fit, test = slice(0, 400), slice(400, 600)
    mapping, *_ = np.linalg.lstsq(a[fit], b[fit], rcond=None)
    residual = b[test] - a[test] @ mapping
    return float(1 - residual.var() / b[test].var())


def test_idiosyncratic_subjects_are_not_a_linear_map_of_each_other():
    """In shared-linear, one subject's noise-free responses predict another's almost exactly through one
    linear map (a shared response model's assumption); in idiosyncratic, private features, gains and HRFs
    leave a large part unexplained, and coverage differs between subjects."""
    assert linear_transfer_r2("shared-linear") > 0.99
    assert linear_transfer_r2("idiosyncratic") < 0.8
    features = np.random.default_rng(1).uniform(-0.5, 0.5, (10, N_FEATURES)).astype(np.float32)
    coverage = [noise_free_responses("idiosyncratic", s, features)[1] for s in (0, 1)]
    assert coverage[0].sum() != coverage[1].sum() and 0.5 < coverage[0].mean() < 1


def _decoded(path) -> bytes:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]).tobytes()


def test_stimuli_encode_to_the_same_pixels_every_time(tmp_path):
    """libx264's AVX-512 code encoded one segment to different streams from call to call, depending on what the
    heap held before (machine B, 2-core Intel Xeon): the stimuli, and every number downstream, then changed
    between reruns. ``write_mp4`` runs libx264's portable C code: the same pixels on every call, and the same
    as a reference C-code encoding (the assembly up to AVX2 gave other pixels too, so the second check fails
    without ``asm=0`` also on CPUs without AVX-512)."""
    rng = np.random.default_rng(1)
    draws = [(sample_timeline(rng, 60, (1, 3)), int(rng.integers(2**31))) for _ in range(3)]
    timeline, seed = draws[2]  # the third segment: its encodings differed most often on machine B
    frames = render_segment(timeline, 2.0, 8, 64, seed=seed)
    decodings = set()
    for attempt in range(4):
        junk = [os.urandom(int(n)) for n in rng.integers(1_000, 200_000, 50)]  # another heap before each call
        del junk
        write_mp4(frames, tmp_path / f"{attempt}.mp4", 8)
        decodings.add(_decoded(tmp_path / f"{attempt}.mp4"))
    assert len(decodings) == 1

    reference = tmp_path / "reference.mp4"
    with av.open(str(reference), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    assert decodings == {_decoded(reference)}
