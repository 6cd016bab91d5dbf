"""The idle workload in a fresh process, so its resident-memory figure is clean.

``python -m coral_graph.bench._idle IMPL AGENTS`` prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys


def main() -> None:
    impl, agents = sys.argv[1], int(sys.argv[2])
    if impl == "floor":
        from coral_graph.bench import _floor

        result = asyncio.run(_floor.idle(agents))
    elif impl == "autogen-core":
        from coral_graph.bench import _autogen

        result = asyncio.run(_autogen.idle(agents))
    else:
        from coral_graph.bench import _coral

        result = asyncio.run(_coral.idle(agents))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
