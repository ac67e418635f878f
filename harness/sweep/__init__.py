"""Sweeps: one MLflow parent run per Hydra multirun, failure isolation, resume and progress."""
