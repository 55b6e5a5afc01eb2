"""Measuring optimizers: ``fixed_seeds`` (the meta-training system's own loss at
fixed seeds, logged during a run), ``held_out`` (held-out tasks against tuned
Adam and SGD-momentum: ``lopt eval``) and ``figures`` (the PES paper's toy
experiments: ``lopt figures``)."""
