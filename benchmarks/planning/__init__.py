"""What planning costs: the probe's wall time and search, the rehearsal, meta against fake tensors, checkpointing."""
