"""``python -m laddertune``: the command line (also what ``torchrun``/``accelerate launch -m laddertune`` run)."""

import sys

from .cli import main

sys.exit(main())
