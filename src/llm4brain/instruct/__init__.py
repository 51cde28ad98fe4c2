"""Instruct stage: tune projection (+ LLM) on aligned fMRI tokens with caption loss + distillation."""
