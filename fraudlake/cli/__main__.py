"""``python -m fraudlake.cli``: the console script without its launcher."""

import sys

from fraudlake.cli.main import main

sys.exit(main())
