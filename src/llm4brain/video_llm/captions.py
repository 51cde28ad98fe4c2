"""``teacher_captions``: the pretrained teacher captions every clip, the references of a dataset that ships
none (Wen 2018 has no captions). Writes ``results/text/captions.h5`` as ``reference_captions`` does, so
training and scoring read it the same way."""

from __future__ import annotations

from pathlib import Path

from llm4brain.artifacts import FeatureFiles, atomic_h5, set_attrs, write_keys, write_strings
from llm4brain.models.captioner import generate_captions
from llm4brain.models.video_llm import encode_clips, load_teacher
from llm4brain.runtime import LOG, select_device
from llm4brain.sections import CaptionsConfig


def teacher_captions(
    *,
    feature_paths: list[str],
    teacher_dir: str | Path,
    out_path: str | Path,
    segments: list[str],
    captions_config: CaptionsConfig,
) -> None:
    """One caption per ``(segment, tr)`` of ``segments`` from the teacher on the clip's cached features. An
    empty caption is an error: a reference must say something.

    Args:
        feature_paths: the cached features of every segment (``features/{segment}.h5``).
        teacher_dir: the pretrained teacher (``import_video_llm``'s pointer to a local checkpoint).
        out_path: the captions artifact (``text/captions.h5``), as ``reference_captions`` writes it.
        segments: the segments to caption, in order.
        captions_config: the ``captions`` section: its decoding settings and ``device``.
    """
    qformer, captioner, settings = load_teacher(teacher_dir, select_device(captions_config.device))
    features = FeatureFiles(feature_paths)
    keys, captions = [], []
    for segment in segments:  # a segment at a time, a batch of clips read at a time (encode_clips)
        if segment not in features:
            raise ValueError(f"no cached features for segment {segment!r}")
        clips = [(segment, k) for k in range(features.n_tr[segment])]
        keys += clips
        captions += generate_captions(captioner, encode_clips(qformer, features, clips), captions_config)
        LOG.info("%s: %d captions, first %r", segment, len(clips), captions[-len(clips)])
    empty = [key for key, text in zip(keys, captions, strict=True) if not text.strip()]
    if empty:
        raise ValueError(f"{teacher_dir}: the teacher wrote empty captions for {len(empty)} clips, e.g. {empty[:3]}")
    with atomic_h5(out_path, "captions", captions_config.to_dict()) as f:
        write_keys(f, [k[0] for k in keys], [k[1] for k in keys])
        write_strings(f, "caption", captions)
        set_attrs(f, {"source": "teacher", "teacher": settings.get("checkpoint", str(teacher_dir))})
    LOG.info("%d teacher captions of %d segments", len(keys), len(segments))
