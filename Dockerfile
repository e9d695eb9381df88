# fluxbase-realtime: one process, pointed at your PostgreSQL with DATABASE_URL (no embedded database here).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/fluxbase-realtime

COPY pyproject.toml README.md alembic.ini ./
COPY docs/asyncapi.yaml ./docs/
COPY app ./app
COPY alembic ./alembic
# Editable, so the migrations find alembic/ (and the SQL files they run, alembic/versions/sql/) next to the
# package. The code stays root's: the service's user can read it, not change it.
RUN pip install -e . && useradd --system --uid 10001 --no-create-home realtime

USER realtime
EXPOSE 8080
# Alive while the process serves HTTP (/healthz); the load balancer routes by /readyz instead. The slim
# image has no curl: Python asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
# SIGTERM: connections are closed with 1001 and the process exits 0.
CMD ["fluxbase-realtime", "serve"]
