"""Model building blocks: the video Q-Former + LLM teacher, the fMRI encoder and the adaptors."""
