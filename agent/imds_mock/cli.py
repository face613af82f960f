"""``spot-agent imds-mock``: options, the control API's help, and the serving loop."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from types import FrameType

from agent.notices.protocol import EVENT_CODES, SPOT_ACTIONS

from .server import CONTROL_PREFIX, DEFAULT_PORT, ImdsMock

CONTROL_API = f"""\
control API (no token needed; each call answers the emulator's state as JSON):
  POST {CONTROL_PREFIX}interrupt?action=stop&in=120
      spot instance-action: ACTION in IN seconds (hibernate too, as AWS's own mock)
  POST {CONTROL_PREFIX}rebalance
      a rebalance recommendation, from now on
  POST {CONTROL_PREFIX}scheduled?code=instance-stop&in=600&duration=7200&state=active
      a scheduled event (state: active, completed or canceled)
  POST {CONTROL_PREFIX}fail?n=3&status=500
      the next N metadata requests fail with STATUS
  POST {CONTROL_PREFIX}outage?seconds=40&status=503
      every metadata request fails with STATUS for SECONDS
  POST {CONTROL_PREFIX}throttle?every=3
      every 3rd metadata request gets 429 Too Many Requests (every=0: off)
  POST {CONTROL_PREFIX}delay?seconds=2.5
      hold every metadata reply SECONDS (0: off)
  POST {CONTROL_PREFIX}hop-limit?on=1
      never answer token PUTs, as a hop limit of 1 does in a container (on=0: off)
  POST {CONTROL_PREFIX}drop-tokens
      forget every token, as an IMDS restart does
  POST {CONTROL_PREFIX}clear
      no notices, no events, no faults
  GET  {CONTROL_PREFIX}state
      what is served now

example:
  spot-agent imds-mock --notice-after 60 --action stop &
  export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{DEFAULT_PORT}
  curl -X POST 'http://127.0.0.1:{DEFAULT_PORT}{CONTROL_PREFIX}throttle?every=3'
"""


LOOPBACK = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a name or an address anything else can reach is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _event_spec(value: str) -> tuple[str, float]:
    code, _, seconds = value.partition("@")
    if code not in EVENT_CODES:
        raise argparse.ArgumentTypeError(
            f"event code must be one of {', '.join(EVENT_CODES)}, got {code!r}"
        )
    try:
        in_seconds = float(seconds) if seconds else 86400.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: SECONDS after @ must be a number") from None
    return code, in_seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spot-agent imds-mock``; also puts the control API in ``--help``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CONTROL_API
    parser.add_argument(
        "--host",
        default=LOOPBACK,
        help="address to listen on (default %(default)s; another one is warned about: the "
        "control API has no authentication)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 picks one)"
    )
    parser.add_argument(
        "--notice-after",
        type=float,
        metavar="SECONDS",
        help="serve a spot interruption notice this many seconds after start",
    )
    parser.add_argument(
        "--action",
        choices=SPOT_ACTIONS,
        default="terminate",
        help="what the --notice-after notice announces (default %(default)s)",
    )
    parser.add_argument(
        "--notice-lead",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time between the notice and the action, its `time` (default %(default)s, for "
        "hibernate too, as AWS's ec2-metadata-mock; 0 rehearses a hibernation at once)",
    )
    parser.add_argument(
        "--rebalance-after",
        type=float,
        metavar="SECONDS",
        help="serve a rebalance recommendation this many seconds after start",
    )
    for flag, state in (
        ("--scheduled", "an active"),
        ("--canceled-event", "a canceled"),
        ("--completed-event", "a completed"),
    ):
        parser.add_argument(
            flag,
            type=_event_spec,
            action="append",
            default=[],
            metavar="CODE[@SECONDS]",
            help=f"add {state} scheduled event starting in SECONDS (default one day); "
            "repeatable" + (f"; CODE: {', '.join(EVENT_CODES)}" if flag == "--scheduled" else ""),
        )
    parser.add_argument(
        "--no-token", action="store_true", help="also accept IMDSv1 requests without a token"
    )
    parser.add_argument(
        "--hop-limit-1",
        action="store_true",
        help="never answer token PUTs, as a hop limit of 1 does in a container "
        "(with --no-token, IMDSv1 still answers)",
    )
    parser.add_argument("--user-data", metavar="TEXT", help="the instance's user data")


def main(args: argparse.Namespace) -> int:
    mock = ImdsMock(
        args.host,
        args.port,
        notice_after=args.notice_after,
        action=args.action,
        notice_lead=args.notice_lead,
        rebalance_after=args.rebalance_after,
        require_token=not args.no_token,
    )
    if args.user_data is not None:
        mock.user_data = args.user_data
    mock.hop_limit_1(args.hop_limit_1)
    if not _is_loopback(args.host):
        print(
            f"imds-mock: warning: listening on {args.host}: anyone who reaches it can post "
            "notices and faults (the control API has no authentication) and read the fake "
            f"credentials; use --host {LOOPBACK} unless a container must reach it",
            file=sys.stderr,
        )
    try:
        mock.start()
    except OSError as exc:
        print(f"imds-mock: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    for specs, state in (
        (args.scheduled, "active"),
        (args.canceled_event, "canceled"),
        (args.completed_event, "completed"),
    ):
        for code, in_seconds in specs:
            mock.add_scheduled_event(code, in_seconds, state=state)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    reachable = mock.url if args.host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{mock.port}"
    print(
        f"imds-mock: EC2 metadata on {mock.url}; "
        f"export AWS_EC2_METADATA_SERVICE_ENDPOINT={reachable}",
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        mock.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
