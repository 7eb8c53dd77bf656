"""``python -m tierstore.cli``: the ``tierstore`` command."""

import sys

from . import main

sys.exit(main())
