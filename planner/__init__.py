"""planner: probe GPU memory, train an ensemble with fastai, and tune its weights with Optuna."""

__version__ = "0.1.0"
