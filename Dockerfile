# syntax=docker/dockerfile:1
#
# lorafleet gateway image: the OpenAI-compatible gateway only, in cluster mode. It holds no vLLM,
# no torch and no model weights: engines run from the official vLLM images (see helm/lorafleet),
# and the gateway reaches them through LORAFLEET_ENGINE_URLS or LORAFLEET_ENGINE_DISCOVERY.
#
#   docker build -t lorafleet/gateway:0.1.0 .
#   docker run --rm -p 8000:8000 -e LORAFLEET_ENGINE_URLS=http://engine:8000 \
#     -e LORAFLEET_SERVED_MODEL_NAME=llama-3.1-8b-instruct lorafleet/gateway:0.1.0
#
# Locked dependencies: every third-party package comes from requirements/gateway.lock (the
# gateway's part of requirements/cpu.lock, same pins), each checked against its sha256
# (--require-hashes) and installed without resolving (--no-deps), so nothing unlisted arrives.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# bash with pipefail: a failing command inside a pipe fails the step.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The gateway's lock: what lorafleet[otel] needs (psycopg for a PostgreSQL registry, OpenTelemetry
# for request traces when LORAFLEET_OTLP_ENDPOINT is set), no torch, transformers or vLLM.
COPY requirements/gateway.lock requirements/gateway.lock

# lorafleet/ maps server/, adapters/ and benchmarks/ into the package through symlinks;
# COPY keeps them and the wheel build follows them, so the four folders travel together.
COPY pyproject.toml README.md ./
COPY lorafleet/ lorafleet/
COPY server/ server/
COPY adapters/ adapters/
COPY benchmarks/ benchmarks/

# pip check: the lock is complete (every requirement of every installed package is there).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps --require-hashes -r requirements/gateway.lock \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip check

# The gateway starts with these packages alone (no torch, no vLLM): fail here, not in the pod.
RUN /opt/venv/bin/lorafleet serve --help > /dev/null \
    && /opt/venv/bin/python -c "import lorafleet.server.app"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="lorafleet gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway for vLLM engines with hot-loaded LoRA adapters" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it (the chart uses 10001).
RUN groupadd --system --gid 10001 lorafleet \
    && useradd --system --uid 10001 --gid lorafleet --home-dir /var/lib/lorafleet \
         --no-create-home --shell /usr/sbin/nologin lorafleet \
    && mkdir -p /var/lib/lorafleet/cache /adapters \
    && chown -R lorafleet:lorafleet /var/lib/lorafleet /adapters

COPY --from=builder /opt/venv /opt/venv

# The image listens on every interface, so it starts only with auth on (LORAFLEET_ADMIN_KEY and
# LORAFLEET_KEY_SECRET, as the Helm chart always sets them) or with an explicit
# LORAFLEET_ALLOW_UNAUTHENTICATED=1 (a trusted network, e.g. a local `docker run`).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/lorafleet \
    LORAFLEET_HOST=0.0.0.0 \
    LORAFLEET_PORT=8000 \
    LORAFLEET_CACHE_DIR=/var/lib/lorafleet/cache \
    LORAFLEET_ADAPTER_ROOTS=/adapters \
    LORAFLEET_ADAPTER_STORE=/adapters/store

USER 10001:10001
WORKDIR /var/lib/lorafleet
EXPOSE 8000

# For docker and compose; Kubernetes ignores it and uses the chart's probes (/health, /ready).
# No curl in the slim image: Python's urllib does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LORAFLEET_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["lorafleet", "serve"]
