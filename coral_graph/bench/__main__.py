"""``python -m coral_graph.bench``."""

from __future__ import annotations

import sys

from coral_graph.bench._main import main

sys.exit(main())
