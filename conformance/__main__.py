"""``python -m fedproto_conformance URL ...`` (installed) or ``python -m conformance URL ...`` (in the
repository): the same as ``fedproto conformance URL ...``."""

import sys

from .cli import main

sys.exit(main())
