# streamproc: one image for the worker, the generator and the admin commands (topics, schema, reconcile).
#   docker build -t streamproc .
#   docker run --rm streamproc --help
# Two stages: the first builds the wheel from the source tree (the topic specs, topics/, and the ClickHouse
# migrations, schemas/, go inside it: pyproject.toml); the second installs only that wheel, not editable,
# with the versions of constraints.txt, as `make install`. No source tree stays in the image.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamproc ./streamproc
COPY topics ./topics
COPY schemas ./schemas
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin streamproc \
 && mkdir -p /data /shared && chown streamproc /data /shared

COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /tmp/wheels
# The packaged topic specs and migrations are found at import (streamproc.resources): check it here.
RUN pip install --constraint /tmp/constraints.txt /tmp/wheels/streamproc-*.whl \
 && rm -rf /tmp/wheels /tmp/constraints.txt \
 && streamproc --help > /dev/null \
 && python -c "import streamproc.runtime.topics, streamproc.store.base"

USER streamproc
WORKDIR /data
# (Faust keeps a small directory in the working directory, hence /data.)
# Containers are reached over the network: bind the web server (/status, /metrics, /api) to all
# interfaces. Secrets come from files (STREAMPROC_CLICKHOUSE_PASSWORD_FILE), never from the image.
ENV STREAMPROC_DATA_DIR=/data \
    STREAMPROC_WEB_HOST=0.0.0.0 \
    STREAMPROC_WEB_PORT=6066
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/status' % os.environ['STREAMPROC_WEB_PORT'], timeout=4)"]

ENTRYPOINT ["streamproc"]
CMD ["worker"]
