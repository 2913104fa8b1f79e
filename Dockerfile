# hpscale's API and web UI in a container.
#
#   docker build -t hpscale .
#   docker run -p 8000:8000 -v hpscale-data:/data hpscale                      # embedded SQLite in /data
#   docker run -p 8000:8000 -e HPSCALE_DATABASE_URL=postgresql://u:p@db/hpscale \
#              -e HPSCALE_API_KEY=... hpscale                                   # shared PostgreSQL, writes on
#
# Settings come from HPSCALE_ variables (service/settings.py); without HPSCALE_API_KEY every
# write is refused.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, the CPU build from PyTorch's own index: the default index would bring the CUDA
# build (gigabytes the API never uses). The package's own "torch>=2.4" is then already met.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The package itself, without its test extras; the source is not needed once installed.
COPY pyproject.toml README.md /tmp/src/
COPY db /tmp/src/db
COPY fitting /tmp/src/fitting
COPY service /tmp/src/service
COPY sweeps /tmp/src/sweeps
COPY web /tmp/src/web
RUN pip install /tmp/src && rm -rf /tmp/src

# A non-root user owning only the data folder: the database (SQLite default) lives there.
RUN useradd --create-home --uid 10001 --user-group hpscale \
    && mkdir -p /data \
    && chown hpscale:hpscale /data
USER hpscale
ENV HPSCALE_DATA_DIR=/data
VOLUME ["/data"]

EXPOSE 8000
# python's urllib, so the slim image needs no curl. The server answers 503 on /healthz when its
# database does not answer or lacks hpscale's current schema, which marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["hpscale", "serve", "--host", "0.0.0.0", "--port", "8000"]
