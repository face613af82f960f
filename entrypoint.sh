#!/bin/sh
# The image's entrypoint: spot-agent supervises the job given as CMD (or `docker run IMAGE
# COMMAND...`). exec makes the agent PID 1, so it receives the platform's SIGTERM itself and
# reaps orphaned processes; its exit status is the container's.
set -eu
exec spot-agent run -- "$@"
