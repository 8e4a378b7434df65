"""Trainer: Isolation Forest training tracked in MLflow, model registry and BentoML export."""
