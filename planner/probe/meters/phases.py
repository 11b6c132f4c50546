"""The two phases of a training step whose peaks every meter reports: forward and backward, then the
optimizer step (where weights, grads and optimizer state peak together)."""

PHASE_FORWARD_BACKWARD = "forward_backward"
PHASE_STEP = "step"
