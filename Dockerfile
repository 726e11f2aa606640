# modelport: gunicorn with uvicorn workers serving the model store at /srv/models.
#
#   docker build -t modelport .
#   docker run --rm -p 8000:8000 -p 8081:8081 --read-only --tmpfs /tmp --tmpfs /dev/shm modelport
#
# Models: the bundled examples are trained at build time into /srv/models. To serve your own
# store instead, mount it over them, read-only (the server never writes to it; UID 10001 must be
# able to read it):
#   docker run --rm -p 8000:8000 -v ./models:/srv/models:ro modelport
# Settings are MODELPORT_* environment variables (`-e MODELPORT_WORKERS=4`); see README.md.
# The root filesystem may be read-only: the server writes only to /tmp and /dev/shm.
#
# Base image: any Debian-like image with python3 (>= 3.11) and its venv module, e.g.
#   --build-arg BASE_IMAGE=localhost/modelport-base
# Offline builds (CI): put wheels for the runtime dependencies and the build backend in ./wheels
# (`pip wheel -c constraints.txt --wheel-dir wheels hatchling==... <dependencies>`) and add
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/wheels
# pip reads both from the environment; left unset, `docker build .` installs from PyPI.
# podman/buildah: add --format docker, or the HEALTHCHECK is dropped (OCI image configs lack it).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A C compiler for the native hot path (app/native), in this stage only. Unreachable apt (an
# offline build on a base without gcc) only costs speed: modelport then takes its Python paths.
# Unpinned (DL3008): whichever gcc the base image's release ships builds it the same.
# hadolint ignore=DL3008
RUN command -v cc >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
         && rm -rf /var/lib/apt/lists/*; } \
    || echo "modelport: no C compiler: the image will take the Python paths"
COPY . .
# Third-party test suites (numpy, scipy, pandas, scikit-learn: ~110 MB) are never imported.
# -P: `app` is the installed package (the library is built into it), not /src/app.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && find /opt/venv -type d -name tests -prune -exec rm -rf {} + \
    && /opt/venv/bin/python -P -m app.native.build \
    && /opt/venv/bin/modelport train --model-dir /opt/models

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 modelport \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin modelport
# Both owned by root: the server (UID 10001) can read its code and models but not change them.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /srv/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELPORT_HOST=0.0.0.0 \
    MODELPORT_PORT=8000 \
    MODELPORT_MODEL_DIR=/srv/models
WORKDIR /srv
USER 10001:10001
# HTTP, and the Open Inference Protocol over gRPC (MODELPORT_GRPC_PORT; 0 turns it off).
EXPOSE 8000 8081
# No curl in slim images: Python's urllib asks /readyz (200 once every model is loaded).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MODELPORT_PORT', '8000'), timeout=4)"]
# gunicorn's master (exec'd by `modelport serve`, so PID 1) drains workers on SIGTERM.
STOPSIGNAL SIGTERM
CMD ["modelport", "serve"]
