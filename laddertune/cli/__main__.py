"""``python -m laddertune.cli``, kept for scripts written before ``python -m laddertune``."""

import sys

from .main import main

sys.exit(main())
