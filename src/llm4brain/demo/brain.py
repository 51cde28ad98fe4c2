"""Simulated subjects: voxel responses to the demo clips, written as real NIfTI runs.

Each voxel mixes a retinotopic low-level drive (mean colour in a coarse grid of the frame) and a semantic
drive (one-hot scene attributes) through spatially smooth maps.  Maps are a template shared by all subjects,
shifted and perturbed per subject, so a model must do real work to transfer across subjects.  The neural
drive is convolved with an HRF and sampled every TR; drift and AR(1) noise are added on top of a
voxel-specific baseline.

How subjects differ is a regime (``demo.regime``), because it decides what cross-subject methods can do:

- ``shared-linear``: every subject is the same stimulus features through its own smooth spatial map, with
  the same HRF, noise level and voxels. This is a shared response model's generative assumption: SRM
  inverts it almost exactly, so results on it say little about real subjects.
- ``idiosyncratic``: on top of that, part of each subject's drive (``demo.idiosyncrasy``)
  comes from features of its own (random nonlinear functions of the stimulus that no other subject
  has), the shared features are weighted by per-subject gains, the HRF differs (peak 4.5-7.5 s,
  undershoot 13-19 s, ratio 1/8-1/4), the noise level differs (×0.7-1.5) and each subject covers its own
  part of the ROI (voxels outside it carry no signal and are dropped by preprocessing). No linear map
  between subjects' voxels, the same at every TR, can undo these.

Which clips a subject watched is data, not a regime: ``data.segments.subject_train`` shows a subject its own
training segments (the disjoint setting, where a shared response model cannot be fitted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal, stats

from llm4brain.demo.scenes import N_SEMANTIC, Scene

RETINOTOPIC_GRID = 4  # the frame is pooled to 4 x 4 cells per colour channel


REGIMES = ("shared-linear", "idiosyncratic")


def canonical_hrf(
    tr: float, duration: float = 32.0, peak: float = 6.0, undershoot: float = 16.0, ratio: float = 1 / 6
) -> np.ndarray:
    """SPM's double-gamma HRF (by default: peak 6 s, undershoot 16 s, ratio 1/6) sampled every ``tr`` s, unit
    sum."""
    t = np.arange(0.0, duration, tr)
    hrf = stats.gamma.pdf(t, peak) - stats.gamma.pdf(t, undershoot) * ratio
    return hrf / hrf.sum()


def clip_features(frames: np.ndarray, timeline: list[Scene], frames_per_tr: int) -> np.ndarray:
    """Per-TR stimulus features: centred low-level colour grid (48) then centred semantic one-hots."""
    n_tr = len(timeline)
    g = RETINOTOPIC_GRID
    clips = frames[: n_tr * frames_per_tr].reshape(n_tr, frames_per_tr, *frames.shape[1:]).mean(axis=1)
    h, w = clips.shape[1] // g, clips.shape[2] // g
    low = clips[:, : h * g, : w * g].reshape(n_tr, g, h, g, w, 3).mean(axis=(2, 4)) / 255.0 - 0.5
    sem = np.stack([s.one_hot() for s in timeline]) - 1.0 / 3.0
    return np.concatenate([low.reshape(n_tr, -1), sem], axis=1).astype(np.float32)


N_FEATURES = RETINOTOPIC_GRID * RETINOTOPIC_GRID * 3 + N_SEMANTIC


def roi_mask(grid: tuple[int, int, int]) -> np.ndarray:
    """A 'visual cortex' ROI: the ellipsoid inscribed in the grid."""
    axes = [np.linspace(-1, 1, n) for n in grid]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    return (xx**2 + yy**2 + zz**2) <= 1.0


def _smooth_maps(rng: np.random.Generator, n: int, grid: tuple[int, int, int], sigma: float) -> np.ndarray:
    """``n`` smooth random spatial maps with unit spatial std, shape (n, X, Y, Z)."""
    maps = np.stack([ndimage.gaussian_filter(rng.standard_normal(grid), sigma, mode="wrap") for _ in range(n)])
    return maps / maps.std(axis=(1, 2, 3), keepdims=True)


def template_maps(seed: int, grid: tuple[int, int, int]) -> np.ndarray:
    """Feature-to-voxel weights shared by all subjects, (N_FEATURES, X, Y, Z).

    Posterior voxels (low y) are retinotopic: tuned to one grid cell (their x, z position) and to a colour
    channel; anterior voxels carry the semantic maps.
    """
    rng = np.random.default_rng(seed)
    X, Y, Z = grid
    g = RETINOTOPIC_GRID
    posterior = np.clip(1.5 - np.linspace(0, 2.5, Y), 0, 1)[None, :, None]  # fades out along y
    anterior = 1.0 - 0.7 * posterior
    xx, zz = np.meshgrid((np.arange(X) + 0.5) / X * g, (np.arange(Z) + 0.5) / Z * g, indexing="ij")
    colour_pref = _smooth_maps(rng, 3, grid, sigma=1.5)
    low = np.zeros((g, g, 3, X, Y, Z))
    for i in range(g):
        for j in range(g):
            prf = np.exp(-((xx - j - 0.5) ** 2 + (zz - i - 0.5) ** 2) / (2 * 0.6**2))[:, None, :]
            for c in range(3):
                low[i, j, c] = prf * np.maximum(colour_pref[c], 0) * posterior
    sem = _smooth_maps(rng, N_SEMANTIC, grid, sigma=1.2) * anterior
    return np.concatenate([low.reshape(-1, *grid), sem]).astype(np.float32)


@dataclass
class SubjectModel:
    """One simulated subject: its weights, baseline and noise settings."""

    weights: np.ndarray  # (N_FEATURES [+ its private features], V) over in-mask voxels
    baseline: np.ndarray  # (V,)
    scale: np.ndarray  # (V,) signal amplitude; 0 outside the subject's coverage
    noise: float
    drift: float
    rng: np.random.Generator
    hrf: tuple[float, float, float] = (6.0, 16.0, 1 / 6)  # peak, undershoot, ratio
    private: np.ndarray | None = None  # (N_FEATURES, n_private): its own features, tanh(features @ private)

    def features(self, shared: np.ndarray) -> np.ndarray:
        """The features this subject responds to: the shared ones, then its private ones."""
        if self.private is None:
            return shared
        return np.concatenate([shared, np.tanh(shared @ self.private)], axis=1)


def make_subject(
    template: np.ndarray,
    mask: np.ndarray,
    seed: int,
    variability: float,
    shift: int,
    noise: float,
    drift: float,
    reference_features: np.ndarray,
    regime: str = "shared-linear",
    idiosyncrasy: float = 0.0,
) -> SubjectModel:
    """Perturb the template into one subject's maps: a rigid shift plus independent smooth maps; in the
    ``idiosyncratic`` regime also its own features, feature gains, HRF, noise level and coverage (drawn
    from a stream of their own, so the shared-linear part is the same in both regimes)."""
    if regime not in REGIMES:
        raise ValueError(f"demo.regime {regime!r} is not one of {', '.join(REGIMES)}")
    rng = np.random.default_rng(seed)
    grid = mask.shape
    offsets = rng.integers(-shift, shift + 1, size=3)
    own = np.roll(template, tuple(offsets), axis=(1, 2, 3))
    own = own + variability * _smooth_maps(rng, template.shape[0], grid, sigma=1.2) * own.std()
    weights = own[:, mask]
    if regime == "shared-linear":
        drive = reference_features @ weights
        weights = weights / (drive.std(axis=0, keepdims=True) + 1e-6)
        baseline = rng.uniform(500, 1500, size=weights.shape[1])
        return SubjectModel(weights.astype(np.float32), baseline, 0.02 * baseline, noise, drift, rng)
    baseline = rng.uniform(500, 1500, size=weights.shape[1])
    own_rng = np.random.default_rng((seed, 1))  # what only this regime draws
    gains = np.exp(own_rng.normal(0.0, 0.5, (len(weights), 1)))  # shared features, weighted its own way
    shared = weights * gains
    n_private = N_FEATURES // 2
    private = own_rng.standard_normal((N_FEATURES, n_private)) / np.sqrt(N_FEATURES) * 3.0
    private_maps = _smooth_maps(own_rng, n_private, grid, sigma=1.2)[:, mask]
    model = SubjectModel(shared, baseline, 0.02 * baseline, noise, drift, rng, private=private)
    augmented = model.features(reference_features)
    parts = [
        part / ((features @ part).std(axis=0, keepdims=True) + 1e-6)
        for features, part in ((reference_features, shared), (augmented[:, N_FEATURES:], private_maps))
    ]
    model.weights = np.concatenate([np.sqrt(1 - idiosyncrasy) * parts[0], np.sqrt(idiosyncrasy) * parts[1]])
    model.weights /= (augmented @ model.weights).std(axis=0, keepdims=True) + 1e-6
    model.weights = model.weights.astype(np.float32)
    model.hrf = (own_rng.uniform(4.5, 7.5), own_rng.uniform(13.0, 19.0), own_rng.uniform(1 / 8, 1 / 4))
    model.noise = noise * own_rng.uniform(0.7, 1.5)
    axes = [np.linspace(-1, 1, n) for n in grid]
    centre, radius = own_rng.uniform(-0.15, 0.15, 3), own_rng.uniform(0.8, 1.0, 3)
    coords = np.meshgrid(*axes, indexing="ij")
    inside = sum(((a - c) / r) ** 2 for a, c, r in zip(coords, centre, radius, strict=True)) <= 1
    model.scale = np.where(inside[mask], model.scale, 0.0)  # outside its coverage: a flat baseline
    return model


def simulate_run(
    subject: SubjectModel, features: np.ndarray, rest_before: int, rest_after: int, tr: float
) -> np.ndarray:
    """BOLD (T, V) for one run showing a segment whose per-TR features are ``features``."""
    features = subject.features(features)
    n_feat = features.shape[1]
    padded = np.concatenate([np.zeros((rest_before, n_feat)), features, np.zeros((rest_after, n_feat))])
    hrf = canonical_hrf(tr, peak=subject.hrf[0], undershoot=subject.hrf[1], ratio=subject.hrf[2])
    neural = padded @ subject.weights  # (T, V)
    bold_signal = signal.lfilter(hrf, [1.0], neural, axis=0)  # causal convolution, unit steady-state gain
    T, V = neural.shape
    rng = subject.rng
    time = np.linspace(-1, 1, T)[:, None]
    drift = rng.standard_normal((3, V)) * subject.drift
    trend = drift[0] * time + drift[1] * time**2 + drift[2] * np.cos(np.pi * (time + 1) / 2)
    noise = np.empty((T, V))
    noise[0] = rng.standard_normal(V)
    for t in range(1, T):  # AR(1) scanner noise
        noise[t] = 0.3 * noise[t - 1] + np.sqrt(1 - 0.09) * rng.standard_normal(V)
    bold = subject.baseline + subject.scale * (bold_signal + trend + subject.noise * noise)
    return bold.astype(np.float32)
