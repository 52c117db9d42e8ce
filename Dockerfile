# syntax=docker/dockerfile:1
# maskwatch image: the Ray base image plus our pinned dependencies and the package.
#
#   GPU (default; pose/classify workers):
#     docker build -t ghcr.io/maskwatch/maskwatch:0.1.0-ray2.60.0-gpu .
#   CPU (head, cpu workers; no CUDA, smaller):
#     docker build --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311 -t ghcr.io/maskwatch/maskwatch:0.1.0-ray2.60.0 .
#
# RAY_VERSION must equal the ray pin in pyproject.toml, rayVersion in k8s/*.yaml and the version in the image tag
# (tests/test_k8s_manifests.py checks the files; the RUN below checks the image).
# The pose model is baked in: the driver (head) and the pose actors open the same $MASKWATCH_MODEL_DIR path. Build
# it first with `maskwatch models build --model-dir models` (k8s/README.md).
ARG RAY_VERSION=2.60.0
ARG BASE_IMAGE=rayproject/ray:${RAY_VERSION}-py311-gpu
FROM ${BASE_IMAGE}

ARG RAY_VERSION
# 1: build without models/ (an image for tests; `maskwatch run` will then fail to find the pose model).
ARG ALLOW_MISSING_MODEL=0

ENV MASKWATCH_MODEL_DIR=/home/ray/maskwatch/models \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONDONTWRITEBYTECODE=1

# Created as the base image's user (ray): pip builds the package in the source tree, so it must be writable.
RUN mkdir -p /home/ray/maskwatch
WORKDIR /home/ray/maskwatch

# Dependencies first, in their own layer: it is rebuilt only when the lock changes, not on every code change.
COPY --chown=ray:users requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY --chown=ray:users . .
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import ray, sys; sys.exit(None if ray.__version__ == '${RAY_VERSION}' else 'ray ' + ray.__version__ + ' in the image, expected ${RAY_VERSION}: the lock must not move ray')" \
 && { [ "${ALLOW_MISSING_MODEL}" = 1 ] || [ -f "${MASKWATCH_MODEL_DIR}/yolo11n-pose.onnx" ] \
      || { echo "no ${MASKWATCH_MODEL_DIR}/yolo11n-pose.onnx: run 'maskwatch models build --model-dir models' first, or pass --build-arg ALLOW_MISSING_MODEL=1" >&2; exit 1; }; }
