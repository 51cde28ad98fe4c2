"""fMRI encoder: a 3-D CNN tokenizer over volumes (or MinD-Vis' 1-D patches over a voxel / grayordinate
vector) + an SC-MBM-style (ViT) transformer.

MinD-Vis patches a 1-D voxel vector; LLM4Brain replaces that with a 3-D CNN over the volume, so tokens keep
their spatial neighbourhood. Samples without a grid (CIFTI grayordinates) keep the 1-D patches. Blocks are
timm's ViT blocks.
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import Block
from torch import nn

from llm4brain.sections import EncoderConfig


class VolumeTokenizer(nn.Module):
    """(B, W, X, Y, Z) window of W volumes → (B, N, D) tokens, one per cubic patch, with 3-D positions.

    A stride-2 3×3×3 convolution halves the grid (cheap on CPU, unlike a full-resolution stem), then a
    (patch/2)³ strided convolution makes one token per patch³ voxels.
    """

    def __init__(self, grid: tuple[int, int, int], window: int, channels: int, patch: int, dim: int) -> None:
        super().__init__()
        if patch < 2 or patch % 2:
            raise ValueError(f"tokenizer patch must be an even number >= 2, got {patch}")
        self.padded = tuple(math.ceil(g / patch) * patch for g in grid)
        self.patch, self.patch_values = patch, window * patch**3
        self.stem = nn.Sequential(nn.Conv3d(window, channels, 3, stride=2, padding=1), nn.GELU())
        self.proj = nn.Conv3d(channels, dim, kernel_size=patch // 2, stride=patch // 2)
        n_tokens = math.prod(p // patch for p in self.padded)
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)

    def pad(self, volumes: torch.Tensor) -> torch.Tensor:
        pad = []
        for size, target in zip(reversed(volumes.shape[2:]), reversed(self.padded), strict=True):
            pad += [0, target - size]
        return nn.functional.pad(volumes, pad)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stem(self.pad(volumes)))  # (B, D, X/p, Y/p, Z/p)
        return x.flatten(2).transpose(1, 2) + self.pos_embed

    def patchify(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, W, X, Y, Z) → (B, N, W·p³): each token's voxels, in token order (masked modelling targets)."""
        x = self.pad(volumes)
        b, w, p = x.shape[0], x.shape[1], self.patch
        nx, ny, nz = (size // p for size in self.padded)
        x = x.reshape(b, w, nx, p, ny, p, nz, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, nx * ny * nz, self.patch_values)


class VectorTokenizer(nn.Module):
    """(B, W, V) window of W voxel vectors → (B, N, D) tokens: MinD-Vis' ``Conv1d(W, D, p, stride=p)`` over
    non-overlapping runs of ``p`` voxels (the vector zero-padded to a multiple of ``p``), + 1-D positions."""

    def __init__(self, length: int, window: int, patch: int, dim: int) -> None:
        super().__init__()
        self.padded = math.ceil(length / patch) * patch
        self.patch, self.patch_values = patch, window * patch
        self.proj = nn.Conv1d(window, dim, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.padded // patch, dim) * 0.02)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(vectors, [0, self.padded - vectors.shape[-1]])
        return self.proj(x).transpose(1, 2) + self.pos_embed

    def patchify(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, W, V) → (B, N, W·p): each token's voxels, in token order (masked modelling targets)."""
        x = nn.functional.pad(vectors, [0, self.padded - vectors.shape[-1]])
        b, w = x.shape[:2]
        return x.reshape(b, w, -1, self.patch).permute(0, 2, 1, 3).reshape(b, -1, self.patch_values)


class FmriEncoder(nn.Module):
    """Tokenizer + transformer blocks + final norm: (B, W, X, Y, Z) volumes or (B, W, V) vectors → (B, N, D)."""

    def __init__(
        self,
        grid: tuple[int, ...],
        window: int,
        channels: int,
        patch: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        vector_patch: int = 16,
    ) -> None:
        super().__init__()
        self.tokenizer: VectorTokenizer | VolumeTokenizer
        if len(grid) == 1:
            self.tokenizer = VectorTokenizer(grid[0], window, vector_patch, dim)
        elif len(grid) == 3:
            self.tokenizer = VolumeTokenizer(grid, window, channels, patch, dim)
        else:
            raise ValueError(f"fMRI samples must be volumes (X, Y, Z) or vectors (V,), got shape {grid}")
        self.blocks = nn.Sequential(
            *[
                Block(dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=dropout, attn_drop=dropout)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)

    @staticmethod
    def standardize(volumes: torch.Tensor) -> torch.Tensor:
        """Each sample standardised over its voxels: single trials and repeat averages (lower variance) then
        look alike to the network."""
        shape = (-1,) + (1,) * (volumes.dim() - 1)
        flat = volumes.flatten(1)
        return (volumes - flat.mean(1).view(shape)) / (flat.std(1).view(shape) + 1e-6)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(tokens))

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(self.tokenizer(self.standardize(volumes)))


def build_encoder(grid: tuple[int, ...], encoder: EncoderConfig) -> FmriEncoder:
    """The encoder of the config's ``encoder`` section for samples of shape ``grid``."""
    tok = encoder.tokenizer
    return FmriEncoder(
        grid,
        encoder.window,
        tok.channels,
        tok.patch,
        encoder.dim,
        encoder.depth,
        encoder.num_heads,
        encoder.mlp_ratio,
        encoder.dropout,
        tok.vector_patch,
    )
