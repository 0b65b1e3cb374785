# The relay: gunicorn serving wsgi:app; its master applies the migrations at start (RELAY_AUTO_MIGRATE). SQLite in /app/instance by default;
# set DATABASE_URL=postgresql+psycopg://… for PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RELAY_BIND=0.0.0.0:8080

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes. Its last line, `-e .` (this
# project, for the `relay` command), is installed once the code is in.
COPY requirements.txt .
RUN grep -v '^-e ' requirements.txt > /tmp/pinned.txt && pip install -r /tmp/pinned.txt && rm /tmp/pinned.txt

RUN useradd --system --uid 10001 --home-dir /app relay \
    && mkdir -p /app/instance && chown relay:relay /app/instance
COPY --chown=relay:relay pyproject.toml config.py wsgi.py gunicorn.conf.py ./
COPY --chown=relay:relay relay ./relay
COPY --chown=relay:relay migrations ./migrations
RUN pip install --no-deps -e .

USER relay
VOLUME ["/app/instance"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
