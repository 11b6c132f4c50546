"""How good the tuned ensemble weights are."""
