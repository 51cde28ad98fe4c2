"""llm4brain: decode what a person watched, as text, from their fMRI."""

__version__ = "0.1.0"
