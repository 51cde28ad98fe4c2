"""The embedded demo dataset: rendered clips, ground-truth captions and simulated subjects' fMRI."""
