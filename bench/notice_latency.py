"""How soon a spot notice is seen: detection latency against the IMDS emulator.

The agent's IMDS source, with its defaults (poll every 2 s, back-off at most 3 s while the
service errs), watches ``imds-mock`` on 127.0.0.1 in this process. Each case posts N spot
notices, one at a time, and measures from the post to the moment the source hands the
notice over:

- ``none``: no faults; each notice is posted at a random phase of the poll;
- ``throttled``: one metadata answer in three is a 429;
- ``outage``: every answer is a 503 for ``--outage`` seconds (default 40); the notice is
  posted the moment the outage ends (N outages: this case takes N x 40 s).

    python bench/notice_latency.py [--count 20] [--outage 40] [--cases none,throttled,outage]

Prints median, p90 and max per case. Nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402

from agent.imds_mock import ImdsMock  # noqa: E402
from agent.notices import Notice  # noqa: E402
from agent.notices.client import ImdsClient  # noqa: E402
from agent.notices.source import ImdsSource  # noqa: E402


class Watch:
    def __init__(self, url: str) -> None:
        self.seen: list[float] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.source = ImdsSource(ImdsClient(url))
        self.thread = threading.Thread(target=self.source.run, args=(self.post, self.stop))
        self.thread.start()

    def post(self, notice: Notice) -> None:
        if notice.is_interruption:
            with self.cond:
                self.seen.append(time.monotonic())
                self.cond.notify_all()

    def wait_for(self, count: int) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.seen) >= count, timeout=120):
                raise SystemExit("a notice was never seen")
            return self.seen[count - 1]

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def measure(case: str, count: int, outage: float) -> list[float]:
    latencies = []
    with ImdsMock() as mock:
        watch = Watch(mock.url)
        while not watch.source.available:
            time.sleep(0.05)
        if case == "throttled":
            mock.throttle(3)
        for i in range(count):
            if case == "outage":
                mock.outage(outage, 503)
                time.sleep(outage)
            else:
                time.sleep(random.uniform(0.5, 2.5))  # any phase of the 2 s poll
            posted = time.monotonic()
            mock.post_interruption("terminate", in_seconds=120 + i)  # a new notice each time
            latencies.append(watch.wait_for(i + 1) - posted)
            print(f"  {case} #{i + 1}: {latencies[-1]:.2f} s", file=sys.stderr, flush=True)
        watch.close()
    return latencies


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--outage", type=float, default=40.0)
    parser.add_argument("--cases", default="none,throttled,outage")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # quiet
    rows = []
    for case in args.cases.split(","):
        lat = measure(case, args.count, args.outage)
        label = f"outage {args.outage:g} s" if case == "outage" else case
        rows.append((label, statistics.median(lat), p90(lat), max(lat)))
    print(f"detection latency over {args.count} notices (poll 2 s, back-off <= 3 s)")
    print(f"{'case':<16} {'median':>7} {'p90':>7} {'max':>7}")
    for label, med, q90, top in rows:
        print(f"{label:<16} {med:>6.2f}s {q90:>6.2f}s {top:>6.2f}s")


if __name__ == "__main__":
    main()
