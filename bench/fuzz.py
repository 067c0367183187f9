"""The long fuzz run: tests/integration/test_fuzz.py with many more examples, randomised.

The normal test run fuzzes every route of ``/openapi.json`` for at most 20 s per store with a
fixed seed; this runs the same test for longer with a new seed each time and prints, per store,
how many requests were sent and the statuses they got. It exits 1 when a request got a 5xx or a
4xx that is not in OpenAI's error shape (the failing request is printed as a curl command).

    .venv/bin/python bench/fuzz.py --examples 500 --budget-s 600
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="per operation and mode")
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds per store")
    parser.add_argument("--store", choices=["sqlite", "postgres+redis"], default=None)
    args = parser.parse_args()
    env = {
        **os.environ,
        "PASSERELLE_FUZZ_EXAMPLES": str(args.examples),
        "PASSERELLE_FUZZ_BUDGET_S": str(args.budget_s),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    cmd.append(
        "tests/integration/test_fuzz.py"
        + (f"::test_no_generated_request_gets_a_5xx[{args.store}]" if args.store else "")
    )
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if "fuzz:" in line or line.startswith(("E ", "FAILED", "PASSED")) or " passed" in line:
            print(line.lstrip("."))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
