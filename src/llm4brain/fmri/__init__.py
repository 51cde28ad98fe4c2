"""fMRI preprocessing: raw runs → masked, detrended, z-scored samples paired to ``(segment, tr)``; and
:mod:`~llm4brain.fmri.stream`, the training stages' bounded-memory streams of those samples."""
