"""``python -m toolcall.cli``: the same as the ``toolcall`` command."""

import sys

from toolcall.cli import main

sys.exit(main())
