"""`python -m generator serve ...`: the generator process the bot spawns."""

from __future__ import annotations

import sys

from generator.server import main

raise SystemExit(main(sys.argv[1:]))
