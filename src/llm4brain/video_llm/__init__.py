"""The demo's video teacher: trains the tiny video Q-Former + LLM to caption clips from cached features."""
