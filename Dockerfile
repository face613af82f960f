# spot-agent base image: job authors build FROM it and set CMD (see docs/container.md).
#
# The base is pinned by tag and digest (the multi-arch index of python:3.12.7-slim-bookworm);
# refresh both together, deliberately:
#   docker buildx imagetools inspect python:3.12.7-slim-bookworm
FROM python:3.12.7-slim-bookworm@sha256:60d9996b6a8a3689d36db740b49f4327be3be09a21122bd02fb8895abb38b50d

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The agent's own code, installed from this repository (not an editable install).
WORKDIR /opt/spot-agent/src
# README.m[d]: the package's readme, if the checkout has one (pip only warns without it)
COPY pyproject.toml README.m[d] ./
COPY agent ./agent
COPY checkpoint ./checkpoint
RUN pip install --no-cache-dir . \
    && spot-agent --version \
    && rm -rf /opt/spot-agent/src

COPY entrypoint.sh /entrypoint.sh

# An unprivileged user with a home: the default local store and checkpoint dir live under
# $XDG_STATE_HOME. Jobs that need more set SPOT_AGENT_CHECKPOINT_DIR to a mounted volume.
RUN chmod 0755 /entrypoint.sh \
    && groupadd --system --gid 10001 spot \
    && useradd --system --uid 10001 --gid spot --create-home --home-dir /home/spot spot
ENV HOME=/home/spot \
    XDG_STATE_HOME=/home/spot/.local/state
WORKDIR /home/spot
USER 10001:10001

# The agent is PID 1: no tini/dumb-init, and no `--init` (Batch: initProcessEnabled false).
ENTRYPOINT ["/entrypoint.sh"]
