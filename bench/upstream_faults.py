"""The long version of the upstream-faults battery: thousands of requests over a seeded mix of
5xx, 429 with ``retry-after``, slow answers, resets, truncated streams and invalid JSON.

It runs the same checks as ``tests/integration/test_upstream_faults.py`` (which sends 40 per mode
in ``make test``), request by request: attempts never exceed 1 + ``max_retries``, the client's
error says what the last fault was, each failed attempt is a row of its own at no cost, and the
call rows' cost is exact to the pico-dollar. It prints what it saw and exits 1 on the first broken
promise.

    .venv/bin/python bench/upstream_faults.py [--requests 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.gateway import GatewayProcess
from tests.fakes.upstream import UpstreamProcess
from tests.integration.test_upstream_faults import faulty_config, run_faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per mode")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with (
        UpstreamProcess() as upstream,
        GatewayProcess(Path(tempfile.mkdtemp()), faulty_config(upstream)) as gw,
    ):
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            started = time.perf_counter()
            try:
                seen = run_faults(
                    gw, upstream, stream=stream, requests=args.requests, seed=args.seed
                )
            except AssertionError as exc:
                print(f"{mode}: BROKEN: {exc}")
                return 1
            took = time.perf_counter() - started
            print(
                f"{mode}: {args.requests} requests, {seen['attempts']} upstream attempts "
                f"({seen['attempts'] / args.requests:.2f} per request, at most 3): "
                f"{seen['ok']} answered, {seen['error']} clear errors, "
                f"{seen['upstream_cut']} cut after bytes (an error event, billed as estimated); "
                f"books exact; {took:.0f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
