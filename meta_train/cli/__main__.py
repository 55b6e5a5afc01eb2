"""``python -m meta_train.cli``: the ``lopt`` command."""

import sys

from meta_train.cli import main

sys.exit(main())
