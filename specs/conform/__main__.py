"""``python -m specs.conform``: see ``specs.conform.runner``."""

import sys

from specs.conform.runner import main

sys.exit(main())
