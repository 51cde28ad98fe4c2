"""Align stage: fMRI encoder + adaptors trained so fMRI tokens land on the teacher's video tokens."""
