"""The study design a validated config describes, and the cross-key checks a JSON schema cannot express.

Which subjects there are, which segments each watched (``data.segments``, ``subject_train``), and whom each
replicate holds out (``align.heldout`` or ``align.heldout_rotation``). The Snakemake files build their
tables from :class:`Design` and run :func:`check_config` at DAG build; torch-free, so pytest checks it
without Snakemake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm4brain.sections import VideoConfig
from llm4brain.video.sampling import frames_per_tr


@dataclass(frozen=True)
class Design:
    """Subjects, segments and held-out subjects of a config (``data`` and ``align`` sections)."""

    subjects: tuple[str, ...]
    train: tuple[str, ...]  # data.segments.train: what every subject watched, unless it has its own
    test: tuple[str, ...]
    subject_train: dict[str, tuple[str, ...]]  # data.segments.subject_train
    heldout_list: tuple[str, ...]  # align.heldout
    rotation: bool  # align.heldout_rotation
    replicates: tuple[int, ...]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Design:
        """The design of a config validated against ``config/schema.yaml`` (defaults filled in)."""
        segments = config["data"]["segments"]
        return cls(
            subjects=tuple(config["data"]["subjects"]),
            train=tuple(segments["train"]),
            test=tuple(segments["test"]),
            subject_train={subject: tuple(own) for subject, own in segments["subject_train"].items()},
            heldout_list=tuple(config["align"]["heldout"]),
            rotation=config["align"]["heldout_rotation"],
            replicates=tuple(config["replicates"] or [config["seed"]]),
        )

    @property
    def training_segments(self) -> list[str]:
        """Every training segment some subject watched: the video LLM learns from all of them."""
        return list(dict.fromkeys([*self.train, *(seg for own in self.subject_train.values() for seg in own)]))

    @property
    def all_segments(self) -> list[str]:
        return [*self.training_segments, *self.test]

    def subject_segments(self, subject: str) -> dict[str, list[str]]:
        """The segments one subject watched: its training segments (its own or data.segments.train), the tests."""
        return {"train": list(self.subject_train.get(subject, self.train)), "test": list(self.test)}

    def heldout(self, replicate: int | str) -> list[str]:
        """The subjects a replicate holds out: align.heldout, or with align.heldout_rotation the replicate
        seed's turn, data.subjects[seed mod n] (seeds 0..n-1 hold out every subject once, each in its own
        tree)."""
        if self.rotation:
            return [self.subjects[int(replicate) % len(self.subjects)]]
        return list(self.heldout_list)

    def heldout_by_replicate(self) -> dict[int, list[str]]:
        return {replicate: self.heldout(replicate) for replicate in self.replicates}


def check_config(config: dict[str, Any]) -> None:
    """Cross-key checks of a validated config; each error names the key to change."""
    design = Design.from_config(config)
    data, align = config["data"], config["align"]
    demo = data["layout"] == "demo"
    overlap = sorted(set(design.training_segments) & set(design.test))
    if overlap:
        raise ValueError(f"config data.segments: {overlap} are both train and test")
    for key, values in (
        ("data.subjects", list(design.subjects)),
        ("data.segments", [*design.train, *design.test]),
        ("align.heldout", list(design.heldout_list)),
        *((f"data.segments.subject_train.{s}", list(own)) for s, own in design.subject_train.items()),
    ):
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise ValueError(f"config {key} lists {twice} more than once")
    given = [key for key in ("stimuli", "captions", "mask") if demo and data[key]]
    if given:
        raise ValueError(
            f"config data.{given[0]}: the demo simulates its data under data.root (one folder per replicate); "
            "leave it null"
        )
    if design.rotation and design.heldout_list:
        raise ValueError(
            "config align.heldout_rotation chooses each replicate's held-out subject: leave align.heldout empty"
        )
    if design.rotation and len(design.subjects) < 2:
        raise ValueError("config align.heldout_rotation needs two subjects or more (data.subjects)")
    unknown = sorted(set(design.subject_train) - set(design.subjects))
    if unknown:
        raise ValueError(f"config data.segments.subject_train names unknown subjects {unknown}")
    for held in dict.fromkeys(map(tuple, design.heldout_by_replicate().values())):
        _check_heldout(design, list(held), align["functional_alignment"])
    _check_models(config)
    for stage in ("video_llm", "scmbm", "align", "instruct"):
        train = config[stage]["train"]
        if train["batch_size"] % train["devices"]:
            raise ValueError(
                f"config {stage}.train: batch_size {train['batch_size']} does not divide evenly between "
                f"{train['devices']} devices (each process takes batch_size / devices)"
            )
    # a video.fps that gives no whole number of frames per TR fails
    frames_per_tr(VideoConfig.from_dict(config["video"]), data["tr"])


def _check_heldout(design: Design, held: list[str], functional: dict[str, Any]) -> None:
    """The checks that depend on which subjects a replicate holds out (each replicate's, under rotation)."""
    what = "align.heldout_rotation holds out" if design.rotation else "align.heldout holds out"
    unknown = sorted(set(held) - set(design.subjects))
    if unknown:
        raise ValueError(f"config align.heldout names unknown subjects {unknown}")
    if not set(design.subjects) - set(held):
        raise ValueError("config align.heldout holds out every subject: nothing left to train on")
    labelled = set.intersection(
        *(set(design.subject_segments(subject)["train"]) for subject in design.subjects if subject not in held)
    )
    if not labelled:
        raise ValueError(
            f"config data.segments.subject_train: when {what} {held}, the labelled subjects share no training "
            "segment, and the aligner pairs each clip's fMRI from all of them; hold out the subjects that "
            "watched their own (align.heldout)"
        )
    if functional["method"] == "none":
        return
    for subject in held:
        # srm is fitted on the clips every subject watched; connectivity-srm needs no shared clip
        if functional["method"] == "srm" and not labelled & set(design.subject_segments(subject)["train"]):
            raise ValueError(
                f"config align.functional_alignment: {subject} watched no training segment the labelled "
                "subjects watched (data.segments.subject_train), so a shared response model cannot be "
                "fitted on their responses; set method connectivity-srm or none"
            )
    if functional["reference"] in held:
        raise ValueError(
            f"config align.functional_alignment.reference: {functional['reference']} is held out when {what} "
            f"{held}; the reference must be a labelled subject"
        )


def _check_models(config: dict[str, Any]) -> None:
    """The checks between model and stage settings."""
    vision = config["video"]["model"]
    if vision["source"] == "hf" and not vision["weights"]:
        raise ValueError("config video.model: source hf needs weights, a local checkpoint directory")
    if config["video"]["cache"] == "qformer" and vision["source"] != "hf":
        raise ValueError("config video.cache: qformer needs video.model.source hf (a BLIP-2 checkpoint)")
    if config["instruct"]["encoder_tokens"] and config["instruct"]["input"] != "encoder":
        raise ValueError(
            "config instruct.encoder_tokens needs input: encoder (the latents are the Q-Former's tokens only)"
        )
    llm = config["instruct"]["llm"]
    if llm["quantization"] != "none" and llm["tuning"] == "full":
        raise ValueError("config instruct.llm: a quantized LLM cannot be fully fine-tuned; use tuning lora or frozen")
    if config["align"]["encoder_tuning"] == "adaptor" and not (
        config["scmbm"]["pretrain"] or config["scmbm"]["checkpoint"]
    ):
        raise ValueError(
            "config align.encoder_tuning: adaptor freezes the encoder, which needs pretrained weights "
            "(scmbm.pretrain: true or scmbm.checkpoint)"
        )
    if config["captions"]["source"] == "teacher" and not config["video_llm"]["pretrained"]:
        raise ValueError(
            "config captions.source: teacher needs video_llm.pretrained (the tiny teacher learns from captions)"
        )
