# streamproc: one image for the worker, the generator and the admin commands (topics, schema, reconcile).
#   docker build -t streamproc .
#   docker run --rm streamproc --help
# The source tree stays in /app (editable install): the topic specs (topics/) and ClickHouse migrations
# (schemas/) are read from beside the package at run time. Versions: constraints.txt, as `make install`.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin streamproc \
 && mkdir -p /data /shared && chown streamproc /data /shared

COPY pyproject.toml constraints.txt README.md ./
COPY streamproc ./streamproc
COPY topics ./topics
COPY schemas ./schemas
RUN pip install --constraint constraints.txt --editable . && streamproc --help > /dev/null

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
