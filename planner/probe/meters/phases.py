"""The phases of a run whose peaks the meters report, in the order `planner run` meets them.

fastai's ``fine_tune`` trains one epoch with the body frozen (the head's optimizer state only), then
unfreezes (the whole model's state) and trains on; each epoch ends with a validation pass (no
gradients; its last batch is partial); the run ends with test-time augmentation. The unfrozen
training step is split in two, forward and backward, then the optimizer step (where weights, grads
and optimizer state peak together): the memory curve over micro-batches is fitted on those two.
"""

PHASE_FROZEN = "frozen_train"
PHASE_FORWARD_BACKWARD = "forward_backward"
PHASE_STEP = "step"
PHASE_VALID = "valid"
PHASE_TTA = "tta"
RUN_PHASES = (PHASE_FROZEN, PHASE_FORWARD_BACKWARD, PHASE_STEP, PHASE_VALID, PHASE_TTA)
