"""``python -m agent.imds_mock``: the emulator without the rest of the agent's CLI."""

import argparse
import sys

from . import add_arguments, main

parser = argparse.ArgumentParser(
    prog="python -m agent.imds_mock", description="Local EC2 instance metadata emulator."
)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
