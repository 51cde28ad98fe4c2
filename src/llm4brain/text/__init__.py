"""Text stage: reference captions keyed by ``(segment, tr)``."""
