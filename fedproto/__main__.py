"""``python -m fedproto``: the same as the ``fedproto`` command."""

import sys

from fedproto.cli import main

sys.exit(main())
