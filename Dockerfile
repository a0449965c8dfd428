# syntax=docker/dockerfile:1.7
#
# The cassava model server: MLServer 1.7.1 + cassava.server.runtime.CassavaRuntime + the CropNet weights, CPU only.
# docs/deploy.md explains every choice; `cassava build` passes the build args for you.
#
#   docker build -t cassava:0.1.0 .                                          # CropNet from TF Hub
#   docker build --build-context model-source=$HOME/Downloads \
#                --build-arg MODEL_SOURCE=cropnet.tar.gz -t cassava:0.1.0 .   # a tarball/dir you downloaded
#   docker build --build-arg BACKEND=onnx -t cassava:0.1.0-onnx .            # ONNX Runtime, no TensorFlow
#   docker build --build-arg MODEL_SOURCE=demo -t cassava:0.1.0-untrained .  # UNTRAINED stand-in (tests only)
#
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 -p 8081:8081 -p 8082:8082 cassava:0.1.0

# A tag, not a digest: a digest cannot be looked up from the machine this file was written on. The tag
# pins the Python minor and the Debian release (the bare 3.11-slim tag moved from bookworm to trixie).
# Release builds pin the digest without editing this file, through a BuildKit named context:
#   --build-context python:3.11-slim-bookworm=docker-image://python:3.11-slim-bookworm@sha256:...
# (`cassava build --base-image REF` passes it). Every stage starts from this one.
FROM python:3.11-slim-bookworm AS python

# Empty unless `--build-context model-source=DIR` replaces it; MODEL_SOURCE paths are relative to it.
FROM scratch AS model-source


# ---- builder: the runtime virtualenv, from the hashed lock file and this project's wheel ------------------
FROM python AS builder
ARG BACKEND=tensorflow
# hatchling builds our wheel in pip's isolated build env; PIP_CONSTRAINT reaches that env too.
ARG HATCHLING_VERSION=1.27.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/runtime-tensorflow.lock requirements/runtime-onnx.lock requirements/
# --without-pip: the runtime venv never gets pip or setuptools; the base image's pip installs into it.
# --no-deps --require-hashes: exactly the locked set, every file checked against its hash.
RUN case "${BACKEND}" in tensorflow|onnx) ;; \
      *) echo "BACKEND must be tensorflow or onnx, not '${BACKEND}'" >&2; exit 1 ;; esac \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-deps --require-hashes \
        -r "requirements/runtime-${BACKEND}.lock"
COPY pyproject.toml README.md ./
COPY src/ src/
# The wheel carries the manifests for `cassava deploy render` (pyproject's force-include).
COPY deploy/ deploy/
RUN echo "hatchling==${HATCHLING_VERSION}" > /tmp/build-constraints.txt \
 && PIP_CONSTRAINT=/tmp/build-constraints.txt pip wheel --no-deps --wheel-dir /wheels . \
 && pip --python /opt/venv/bin/python install --no-deps /wheels/cassava_serving-*.whl


# ---- weights: fetch (or demo) and verify the model at build time, so pods need no network ------------
# Always TensorFlow: `cassava model fetch` proves the SavedModel loads and maps [N,224,224,3] -> [N,6].
# fetch.lock = TensorFlow + the command line + the ONNX exporter (tf2onnx): the tools this stage runs,
# which the server image does not carry; the stage is thrown away.
FROM python AS weights
ARG BACKEND=tensorflow
ARG MODEL_SOURCE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
COPY requirements/fetch.lock requirements/
COPY --from=builder /wheels/ /wheels/
RUN python -m venv /opt/fetch \
 && /opt/fetch/bin/pip install --no-deps --require-hashes -r requirements/fetch.lock \
 && /opt/fetch/bin/pip install --no-deps /wheels/cassava_serving-*.whl
COPY --from=model-source / /src/model-source/
# MODEL_SOURCE: empty = CropNet from TF Hub; http(s) URL; a .tar.gz or SavedModel dir inside the
# model-source build context; or `demo`, the UNTRAINED stand-in (labelled so, and it says so at run time).
RUN case "${MODEL_SOURCE}" in \
      "") /opt/fetch/bin/cassava model fetch --dest /opt/cassava/weights ;; \
      demo) echo "WARNING: MODEL_SOURCE=demo builds an UNTRAINED stand-in" >&2 \
            && /opt/fetch/bin/cassava model demo --dest /opt/cassava/weights ;; \
      http://*|https://*) /opt/fetch/bin/cassava model fetch --dest /opt/cassava/weights --from "${MODEL_SOURCE}" ;; \
      *) /opt/fetch/bin/cassava model fetch --dest /opt/cassava/weights \
            --from "/src/model-source/${MODEL_SOURCE#/}" ;; \
    esac \
 && if [ "${BACKEND}" = onnx ] && [ ! -f /opt/cassava/weights/model.onnx ]; then \
      /opt/fetch/bin/cassava model export --format onnx --model /opt/cassava/weights; \
    fi \
 && if [ "${BACKEND}" = onnx ] && [ ! -f /opt/cassava/weights/model.onnx ]; then \
      echo "BACKEND=onnx but /opt/cassava/weights/model.onnx was not written" >&2; exit 1; \
    fi


# ---- server: the venv, the model folder and the weights; nothing else ------------------------------------
FROM python AS server
ARG BACKEND=tensorflow
ARG MODEL_SOURCE=""
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="cassava" \
      org.opencontainers.image.description="CropNet cassava leaf-disease classifier on MLServer 1.7.1 (Open Inference Protocol V2 over REST :8080 and gRPC :8081, Prometheus :8082)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="cassava-serving" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      cassava.backend="${BACKEND}" \
      cassava.model.source="${MODEL_SOURCE}" \
      cassava.model.note="cassava.model.source=demo means an UNTRAINED stand-in whose predictions are meaningless"

# Everything that must be writable lives under /tmp, the one volume a read-only root filesystem needs
# (an emptyDir in the manifests, --tmpfs /tmp with docker run --read-only). MLServer would otherwise
# create .metrics/ and .envs/ in the working directory; Keras 3 writes keras.json under $HOME at import;
# tempfile needs TMPDIR. Python never writes bytecode: pip compiled it in the builder.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    KERAS_HOME=/tmp/keras \
    MLSERVER_METRICS_DIR=/tmp/mlserver/metrics \
    MLSERVER_ENVIRONMENTS_DIR=/tmp/mlserver/envs \
    TF_CPP_MIN_LOG_LEVEL=1 \
    CASSAVA_MODEL_DIR=/opt/cassava/weights \
    CASSAVA_BACKEND=${BACKEND}

COPY --from=builder /opt/venv /opt/venv
COPY model/model-settings.json model/settings.json /opt/cassava/model/
COPY --from=weights /opt/cassava/weights /opt/cassava/weights

# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd entry; above 10000 so that it
# cannot collide with a host account. Root owns every file: the server cannot change its own code.
USER 10001:10001
WORKDIR /opt/cassava
EXPOSE 8080 8081 8082

# For docker/podman; Kubernetes ignores it and uses the probes in deploy/base/pod-template.yaml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('MLSERVER_HTTP_PORT', '8080'), timeout=4)"]

# `mlserver start FOLDER` through cassava.server.launcher: MLServer's own server, plus a preflight that fails in
# seconds on a missing model, bounded request bodies and a draining SIGTERM (docs/reliability.md). CMD is
# the model folder, so a platform only changes `args`; Seldon Core 2, whose agent fills an empty model
# folder at run time, sets `command: [mlserver, start]` instead (deploy/overlays/seldon-core-v2).
ENTRYPOINT ["python", "-m", "cassava.server.launcher"]
CMD ["/opt/cassava/model"]
