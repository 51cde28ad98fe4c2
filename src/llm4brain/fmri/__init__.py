"""fMRI preprocessing: raw runs → masked, detrended, z-scored samples paired to ``(segment, tr)``."""
