"""``python -m synchronicity``: the same as the ``synchronicity`` command."""

import sys

from synchronicity.cli import main

sys.exit(main())
