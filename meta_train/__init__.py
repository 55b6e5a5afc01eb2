"""Unrolled systems, gradient estimators, the outer loop, checkpoints and the CLI."""
