"""``python -m rproxy`` is the ``rproxy`` command."""

import sys

from rproxy.cli import main

sys.exit(main())
