"""The shared base: file records and their loaders, errors, atomic writes, budgets, the training
recipe, GPU and tracker helpers. Imports nothing of the stages (probe, trainer, ensemble) or the CLI."""
