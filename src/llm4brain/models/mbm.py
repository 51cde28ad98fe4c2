"""Sparse-coded masked brain modelling (MinD-Vis' SC-MBM): an MAE over the fMRI encoder's tokens.

Most tokens (``mask_ratio``, 0.75) are hidden; the encoder sees only the rest, and a light decoder
reconstructs the hidden tokens' voxels from the encoder's output plus learned mask tokens. The loss is the
mean squared error on the hidden tokens only, so the encoder must model the brain's structure, not copy it.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from llm4brain.distributed import World
from llm4brain.models.fmri_encoder import FmriEncoder


class MaskedBrainModel(nn.Module):
    """An encoder plus an MAE decoder; ``forward`` returns the masked reconstruction loss."""

    def __init__(
        self, encoder: FmriEncoder, decoder_dim: int, decoder_depth: int, decoder_heads: int, mask_ratio: float
    ) -> None:
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        n_tokens, dim = encoder.tokenizer.pos_embed.shape[1:]
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.randn(1, n_tokens, decoder_dim) * 0.02)
        self.decoder_blocks = nn.Sequential(
            *[Block(decoder_dim, decoder_heads, 4.0, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.predict = nn.Linear(decoder_dim, encoder.tokenizer.patch_values)

    def kept_tokens(
        self, batch: int, n_tokens: int, generator: torch.Generator | None, world: World = World()
    ) -> torch.Tensor:
        """(B, n_keep) indices of the visible tokens, a fresh random subset per sample: ``world``'s share of
        those of the global batch (B samples on each of its processes)."""
        n_keep = max(1, int(n_tokens * (1 - self.mask_ratio)))
        noise = world.share(torch.rand(batch * world.size, n_tokens, generator=generator))
        return noise.argsort(dim=1)[:, :n_keep].to(self.decoder_pos.device)

    def forward(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, world: World = World()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss on the hidden tokens, and the (B, N) mask (1 = hidden). ``volumes`` are ``world``'s share of
        a global batch (:mod:`llm4brain.distributed`): their masks are those the one-process run draws."""
        x = self.encoder.standardize(volumes)
        tokens, target = self.encoder.tokenizer(x), self.encoder.tokenizer.patchify(x)
        b, n, d = tokens.shape
        keep = self.kept_tokens(b, n, generator, world)
        latent = self.encoder.encode_tokens(tokens.gather(1, keep[..., None].expand(-1, -1, d)))
        decoded = self.decoder_embed(latent)
        full = self.mask_token.to(decoded.dtype).expand(b, n, -1).clone()  # bf16 under autocast
        full.scatter_(1, keep[..., None].expand(-1, -1, decoded.shape[-1]), decoded)
        prediction = self.predict(self.decoder_norm(self.decoder_blocks(full + self.decoder_pos)))
        mask = torch.ones(b, n, device=tokens.device).scatter_(1, keep, 0.0)
        error = ((prediction - target) ** 2).mean(-1)
        return (error * mask).sum() / mask.sum(), mask
