"""Meta-training: ``systems`` (what is unrolled), ``estimators`` (the meta-gradient),
``training`` (the outer loop), ``evaluation``, ``runtime`` (how it runs on the
machine), ``cli``; see docs/ARCHITECTURE.md."""
