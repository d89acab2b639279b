# syntax=docker/dockerfile:1
# The midmix service image; Ray head and worker nodes run the same image (same code, same
# pinned versions), so a curation job behaves the same on every node.
#
#   docker build -f docker/service.Dockerfile -t midmix-service .                      # CPU
#   docker build -f docker/service.Dockerfile --build-arg DEVICE=cuda -t midmix-service:cuda .
#
# DEVICE picks the base stage: python:3.11-slim with CPU torch wheels, or a CUDA runtime image
# with CUDA torch wheels. The torch pin must match pyproject.toml (tests/test_docker.py checks).
ARG DEVICE=cpu

FROM python:3.11-slim AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# The wheel: built once from the sources (package data included: the sample corpus and HumanEval,
# so a default curation works inside the image), then installed like any user would.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY midmix midmix
COPY classifiers classifiers
COPY pipelines pipelines
COPY service service
COPY trainer trainer
COPY data data
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --no-deps . -w /dist

# hadolint ignore=DL3006
FROM base-${DEVICE} AS service
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MIDMIX_DATA_DIR=/data
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
COPY --from=wheel /dist /dist
# Versions come from pyproject.toml, which pins what must be pinned (torch, above).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "/dist/midmix-0.1.0-py3-none-any.whl[ray]" \
    && rm -rf /dist \
    && useradd --create-home --uid 1000 midmix \
    && mkdir -p /data \
    && chown midmix /data
USER 1000
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
CMD ["midmix", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
