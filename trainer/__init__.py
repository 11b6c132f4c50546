"""trainer: trains a plan's entries with fastai and saves their held-out and test TTA predictions."""
