"""The brain aligner: fMRI encoder → context tokens → the teacher's video Q-Former with adaptors."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llm4brain.models.adaptors import adapt
from llm4brain.models.fmri_encoder import build_encoder
from llm4brain.models.pretrained_encoder import load_pretrained_encoder
from llm4brain.models.video_llm import VideoQFormer
from llm4brain.models.weights import load_weights, save_weights
from llm4brain.sections import AlignConfig, EncoderConfig

if TYPE_CHECKING:
    from llm4brain.models.instructblip_video import InstructionQFormer

QFORMER_ADAPTOR_SITES = ("attention.output.dense", "output_query.dense")
ENCODER_ADAPTOR_SITES = ("attn.proj", "mlp.fc2")  # after attention and after the MLP of every encoder block


class SubjectLayers(nn.Module):
    """Each subject's own input layer (``align.subject_kernel``): ``x + conv_s(x)``, a convolution of the
    window's W volumes (or vectors) into W over a ``kernel``-wide cube of voxels, zero at start. Multi-subject
    decoders give every subject one (MindEye2's subject ridge, MindBridge's subject embedders); a small kernel
    can learn a subject's own timing (the window's TRs mixed), gain and a local misregistration, not its
    tuning. Subjects are indexed in the aligner's ``subjects`` order."""

    def __init__(self, n_subjects: int, window: int, kernel: int, volumes: bool) -> None:
        super().__init__()
        conv = nn.Conv3d if volumes else nn.Conv1d
        size = kernel if volumes else 1  # a vector's neighbours in storage order are not its neighbours in space
        layers = [conv(window, window, size, padding=size // 2) for _ in range(n_subjects)]
        for layer in layers:
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.convs = nn.ModuleList(layers)

    def forward(self, windows: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """(B, W, ...) windows, sample i of subject ``subjects[i]``, through each one's own layer."""
        out = windows
        for s in subjects.unique().tolist():
            rows = (subjects == s).nonzero().squeeze(1)
            out = out.index_add(0, rows, self.convs[s](windows[rows]))
        return out


class BrainAligner(nn.Module):
    """(B, W, X, Y, Z) volume windows or (B, W, V) vector windows → (B, Q, H) tokens in the teacher's
    video-token space.

    ``encoder`` is the config's ``encoder`` section, ``align`` its ``align`` section. A pretrained
    encoder (``pretrained``: SC-MBM output or a MinD-Vis checkpoint) is loaded before adaptors are inserted.
    With ``align.subject_kernel``, ``subjects`` names whose input layer is whose (:class:`SubjectLayers`),
    and every call says whose windows it passes.
    """

    def __init__(
        self,
        grid: tuple[int, ...],
        encoder: EncoderConfig,
        align: AlignConfig,
        video_qformer: VideoQFormer | InstructionQFormer,
        pretrained: str | Path | None = None,
        subjects: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.grid, self.encoder_config, self.align_config = grid, encoder, align
        self.subjects = tuple(subjects)
        self.encoder = build_encoder(grid, encoder)
        if pretrained is not None:
            load_pretrained_encoder(self.encoder, pretrained)
        if align.encoder_tuning == "adaptor":
            adapt(self.encoder, ENCODER_ADAPTOR_SITES, align.adaptor)
        self.to_context = nn.Linear(encoder.dim, video_qformer.config.encoder_hidden_size)
        self.qformer = copy.deepcopy(video_qformer)
        adapt(self.qformer, QFORMER_ADAPTOR_SITES, align.adaptor)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / align.temperature)))
        self.subject_layers = None  # built last: without them, the same seed gives the same weights as before
        if align.subject_kernel:
            if not self.subjects:
                raise ValueError("align.subject_kernel: the aligner needs the subjects whose input layers it holds")
            volumes = len(grid) == 3
            self.subject_layers = SubjectLayers(len(self.subjects), encoder.window, align.subject_kernel, volumes)

    @property
    def config(self) -> dict[str, Any]:
        """What config.json records: the grid, the sections as they were given and the subjects in order."""
        return {
            "grid": list(self.grid),
            "encoder": self.encoder_config.to_dict(),
            "align": self.align_config.to_dict(),
            "subjects": list(self.subjects),
        }

    def subject_indices(self, names: Sequence[str | None]) -> torch.Tensor | None:
        """Each of ``names`` as :meth:`forward` takes subjects (None: the aligner has no subject layers)."""
        if self.subject_layers is None:
            return None
        for name in names:
            if name not in self.subjects:
                raise ValueError(f"the aligner has input layers for {list(self.subjects)}, not for {name!r}")
        return torch.tensor([self.subjects.index(str(name)) for name in names], device=self.logit_scale.device)

    def subject_index(self, subject: str | None, n: int) -> torch.Tensor | None:
        """``n`` samples of ``subject`` as :meth:`forward` takes them (None: the aligner has no subject layers)."""
        return self.subject_indices([subject] * n)

    def inputs(self, windows: torch.Tensor, subjects: torch.Tensor | None = None) -> torch.Tensor:
        """The windows through their subjects' own layers (as given without subject layers); ``subjects``:
        each sample's index in ``self.subjects``."""
        if self.subject_layers is None:
            return windows
        if subjects is None:
            raise ValueError("this aligner has an input layer per subject: say whose windows these are")
        return self.subject_layers(windows, subjects)

    def align(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D) → the Q-Former's (B, Q, H) tokens in the video-token space."""
        return self.qformer.attend(self.to_context(encoded))

    def forward(self, windows: torch.Tensor, subjects: torch.Tensor | None = None) -> torch.Tensor:
        return self.align(self.encoder(self.inputs(windows, subjects)))

    def encode(self, windows: torch.Tensor, subject: str | None = None, batch_size: int = 128) -> torch.Tensor:
        """Aligned tokens for a stack of ``subject``'s windows, in eval mode and in batches on the model's
        device; returned on the CPU in float32."""
        self.eval()
        return in_batches(
            lambda batch: self(batch, self.subject_index(subject, len(batch))),
            windows,
            self.logit_scale.device,
            batch_size,
        )


@torch.inference_mode()
def in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, device: torch.device, batch_size: int = 128
) -> torch.Tensor:
    """``fn`` over ``inputs`` in batches moved to ``device`` (a subject's windows need not fit it at once),
    gathered on the CPU in float32."""
    return torch.cat(
        [fn(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)]
    )


def save_aligner(directory: Path, model: BrainAligner, teacher: str) -> None:
    """``aligner.safetensors`` + ``config.json`` (grid, encoder and align params, the teacher it was aligned to)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "aligner.safetensors")
    (directory / "config.json").write_text(json.dumps({**model.config, "teacher": str(teacher)}, indent=2))


def load_aligner(directory: str | Path, video_qformer: VideoQFormer | InstructionQFormer) -> BrainAligner:
    """Rebuild a saved aligner around the teacher's Q-Former and load its weights (safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    encoder = EncoderConfig.from_dict(config["encoder"], source=config_path)
    align = AlignConfig.from_dict(config["align"], source=config_path)
    model = BrainAligner(tuple(config["grid"]), encoder, align, video_qformer, subjects=config.get("subjects", ()))
    load_weights(model, directory / "aligner.safetensors")
    return model.eval()
