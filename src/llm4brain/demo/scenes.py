"""Compositional scene content for the demo clips, and the caption that ground truth gives each clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COUNTS = ("one", "two", "three")
SIZES = ("small", "large")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down")
BACKGROUNDS = {"black": (15, 15, 15), "white": (235, 235, 235), "gray": (120, 120, 120)}

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "count": COUNTS,
    "size": SIZES,
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "motion": MOTIONS,
    "background": tuple(BACKGROUNDS),
}


@dataclass(frozen=True)
class Scene:
    """What is on screen during one scene: every attribute a caption can mention."""

    count: str
    size: str
    colour: str
    shape: str
    motion: str
    background: str

    def caption(self) -> str:
        """The ground-truth caption, e.g. 'two small red circles moving left on a gray background'."""
        noun = self.shape if self.count == "one" else f"{self.shape}s"
        return f"{self.count} {self.size} {self.colour} {noun} moving {self.motion} on a {self.background} background"

    def one_hot(self) -> np.ndarray:
        """Concatenated one-hot codes of all attributes (the 'semantic' drive of simulated voxels)."""
        parts = [np.eye(len(values))[values.index(getattr(self, name))] for name, values in ATTRIBUTES.items()]
        return np.concatenate(parts).astype(np.float32)


N_SEMANTIC = sum(len(v) for v in ATTRIBUTES.values())


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw every attribute independently and uniformly."""
    return Scene(**{name: values[rng.integers(len(values))] for name, values in ATTRIBUTES.items()})


def sample_timeline(rng: np.random.Generator, n_tr: int, scene_trs: tuple[int, int]) -> list[Scene]:
    """One scene per TR for a segment of ``n_tr`` TRs; scenes last between ``scene_trs`` TRs (inclusive)."""
    timeline: list[Scene] = []
    while len(timeline) < n_tr:
        length = int(rng.integers(scene_trs[0], scene_trs[1] + 1))
        timeline.extend([sample_scene(rng)] * length)
    return timeline[:n_tr]
