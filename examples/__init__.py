"""Examples of users' own tasks, meta-trained with ``lopt meta-train`` (see README.md)."""
