"""``python -m posrft`` is the ``posrft`` command."""

import sys

from posrft.cli import main

sys.exit(main())
