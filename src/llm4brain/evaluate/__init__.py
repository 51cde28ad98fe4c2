"""Evaluate stage: decode test captions from several sources and score them with pycocoevalcap."""
