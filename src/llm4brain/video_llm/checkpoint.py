"""``import_video_llm``: a configured local checkpoint becomes the teacher at ``results/video_llm``.

Only ``config.json`` is written there (the checkpoint's path and the prompt settings): the checkpoint is
checked once here, in its own job, instead of failing later inside every stage that loads the teacher.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm4brain.artifacts import ArtifactError, atomic_path
from llm4brain.models.instructblip_video import FRAMES, MODEL_TYPES
from llm4brain.runtime import LOG
from llm4brain.sections import VideoLlmConfig


def checkpoint_settings(directory: str | Path, video_llm: VideoLlmConfig, frames_per_tr: int) -> dict[str, Any]:
    """The ``config.json`` that ``import_video_llm`` writes for a local checkpoint, after checking it: an
    InstructBLIP(-Video) config, safetensors weights, both tokenizers, and clips of 4 frames.

    Args:
        directory: the checkpoint (``video_llm.pretrained``).
        video_llm: the ``video_llm`` section, whose prompt settings and ``dtype`` the teacher is used with.
        frames_per_tr: frames sampled per clip (``video.frames_per_tr``); InstructBLIP-Video reads 4.

    Returns:
        The teacher's settings: the checkpoint's path, its frames, ``template``, ``prompt``,
            ``max_caption_tokens`` and ``dtype``.

    Raises:
        ArtifactError: no config.json, another model type, no safetensors weights, no Q-Former tokenizer, or
            a frame count the model does not read.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ArtifactError(
            f"{directory}: video_llm.pretrained has no config.json (a transformers checkpoint directory is expected)"
        )
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in MODEL_TYPES:
        raise ArtifactError(
            f"{config_path}: model_type {model_type!r}; video_llm.pretrained must be an "
            f"InstructBLIP or InstructBLIP-Video checkpoint ({' or '.join(MODEL_TYPES)})"
        )
    if not list(directory.glob("*.safetensors")):
        raise ArtifactError(f"{directory}: no *.safetensors weights (pickled checkpoints are never loaded)")
    if not (directory / "qformer_tokenizer").is_dir():
        raise ArtifactError(f"{directory}: no qformer_tokenizer/ (save the InstructBlipVideoProcessor with the model)")
    if frames_per_tr != FRAMES:
        raise ArtifactError(
            f"{directory}: InstructBLIP-Video reads {FRAMES} frames per clip; set "
            f"video.frames_per_tr: {FRAMES} (is {frames_per_tr})"
        )
    return {
        "checkpoint": str(directory),
        "num_frames": FRAMES,
        "template": video_llm.template,
        "prompt": video_llm.prompt,
        "max_caption_tokens": video_llm.max_caption_tokens,
        "dtype": video_llm.dtype,
    }


def import_video_llm(
    *, checkpoint: str | Path, out_dir: str | Path, video_llm: VideoLlmConfig, frames_per_tr: int
) -> None:
    """Check ``checkpoint`` and write ``out_dir/config.json`` naming it with the section's prompt settings
    (:func:`checkpoint_settings`)."""
    settings = checkpoint_settings(checkpoint, video_llm, frames_per_tr)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        (Path(tmp) / "config.json").write_text(json.dumps(settings, indent=2))
    LOG.info("teacher: %s", settings)
