#!/usr/bin/env python3
"""Name what failed in a CI shard as GitHub annotations: `::error title=<card> <part> <variant>::<error>`.

    python3 scripts/ci_failures.py SHARD CARD PART
Reads SHARD/CARD/quantize_log.json (variants that failed to build); with no failed variant recorded, the
conversion itself failed before any variant was built. Standard library only (runs before the venv exists).
"""

import json
import sys
from pathlib import Path


def main() -> int:
    shard, card, part = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    log = shard / card / "quantize_log.json"
    failed = []
    if log.is_file():
        for key, record in sorted(json.loads(log.read_text()).items()):
            if record.get("status") == "failed":
                failed.append(f"::error title={card} {key.replace('/', ' ')}::{record.get('error')}")
    print("\n".join(failed) or f"::error title={card} {part}::the conversion failed before any variant was built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
