"""``python -m conformance URL ...``: the same as ``fedproto conformance URL ...``."""

import sys

from conformance.cli import main

sys.exit(main())
