"""Count the primes below N with a segmented sieve, saving progress after every segment.

A real job in miniature: it has state (how far it got, how many primes so far), it saves
that state atomically with the ``checkpoint`` API, it asks the agent for a checkpoint at
every tenth of the way, and when an interruption notice arrives it finishes the segment it
is on, saves, and stops. Run it again and it carries on where the checkpoint left it.

    spot-agent run --job-id primes -- python examples/primes.py --limit 1e10

Known answers to check against: pi(1e7) = 664579, pi(1e8) = 5761455,
pi(1e9) = 50847534, pi(1e10) = 455052511.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from types import FrameType

import checkpoint

STATE = "state.json"
stop_requested = 0  # the signal that asked us to stop (SIGTERM from the agent, Ctrl-C)


def on_stop(signum: int, _frame: FrameType | None) -> None:
    global stop_requested
    stop_requested = signum


def base_primes(n: int) -> list[int]:
    """Primes up to n (inclusive), by a plain sieve."""
    sieve = bytearray([1]) * (n + 1)
    sieve[:2] = b"\x00\x00"
    for p in range(2, math.isqrt(n) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n + 1, p)))
    return [i for i, is_p in enumerate(sieve) if is_p]


def sieve_segment(lo: int, hi: int, primes: list[int]) -> tuple[int, int]:
    """(number of primes in [lo, hi), the largest of them or 0)."""
    seg = bytearray([1]) * (hi - lo)
    for p in primes:
        if p * p >= hi:
            break
        start = max(p * p, -(-lo // p) * p)
        seg[start - lo :: p] = bytes(len(range(start - lo, hi - lo, p)))
    for n in range(lo, min(hi, 2)):
        seg[n - lo] = 0  # 0 and 1 are not prime
    last = seg.rfind(1)
    return seg.count(1), (lo + last if last >= 0 else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=float, default=1e10, help="count primes below this")
    ap.add_argument("--segment", type=float, default=2e7, help="numbers per segment")
    ap.add_argument(
        "--segment-delay",
        type=float,
        default=0.0,
        help="sleep after each segment (to rehearse interruptions on a fast machine)",
    )
    args = ap.parse_args()
    limit, size = int(args.limit), int(args.segment)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    state = checkpoint.load_json(STATE) or {
        "limit": limit,
        "segment": size,
        "next": 0,
        "count": 0,
        "largest": 0,
    }
    if (state["limit"], state["segment"]) != (limit, size):
        print(
            f"checkpoint is for --limit {state['limit']} --segment {state['segment']}; "
            "use those or another job id",
            file=sys.stderr,
        )
        return 2
    if state["next"]:
        print(
            f"resuming at {state['next']:,} with {state['count']:,} primes found so far", flush=True
        )
    primes = base_primes(math.isqrt(limit) + 1)
    milestone = max(limit // 10, size)
    started = time.monotonic()
    while state["next"] < limit and not stop_requested:
        lo = state["next"]
        hi = min(lo + size, limit)
        count, largest = sieve_segment(lo, hi, primes)
        state.update(next=hi, count=state["count"] + count, largest=largest or state["largest"])
        checkpoint.save_json(STATE, state)
        checkpoint.report_progress(done=f"{hi / limit:.1%}", primes=state["count"])
        if hi // milestone != lo // milestone:
            print(f"{hi / limit:6.1%}  below {hi:,}: {state['count']:,} primes", flush=True)
            checkpoint.request_sync()
        if args.segment_delay:
            time.sleep(args.segment_delay)
    if state["next"] < limit:
        # This job declares its states (request_sync at each milestone): declare the one it
        # stops at too, or its final checkpoint is the state of the last milestone.
        checkpoint.request_sync()
        print(
            f"stopping at {state['next']:,} ({state['next'] / limit:.1%}); state saved, "
            "run again to resume",
            flush=True,
        )
        return 128 + stop_requested  # stopped by a signal: not done, as a shell would say
    result = {"limit": limit, "primes": state["count"], "largest": state["largest"]}
    checkpoint.save_json("result.json", result)
    print(
        f"primes below {limit:,}: {state['count']:,} (largest {state['largest']:,}); "
        f"this run took {time.monotonic() - started:.1f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
