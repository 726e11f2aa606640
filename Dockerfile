# modelport image. Minimal for now; the container issue adds CI builds, hardening and docs.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY routers ./routers
COPY schemas ./schemas
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/venv/bin/modelport train --model-dir /opt/models

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home modelport
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /srv/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MODELPORT_HOST=0.0.0.0 \
    MODELPORT_MODEL_DIR=/srv/models
WORKDIR /srv
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["modelport", "serve"]
