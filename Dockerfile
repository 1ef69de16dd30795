# syntax=docker/dockerfile:1
# The gateway and the MES in one image (deploy/compose/ runs it three ways: broker config,
# gateway, MES). Build from the repository root: docker build -t microfactory:local .
# Nothing here is architecture-specific: the same file builds on amd64, arm64 and armhf.

# --- build: a venv with the package and its gateway and MES extras -----------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# microfactory/{gateway,mes,sim} are symlinks to these folders: copy them all
COPY pyproject.toml README.md ./
COPY microfactory ./microfactory
COPY gateway ./gateway
COPY services ./services
COPY simulators ./simulators
RUN python -m venv /opt/microfactory/.venv \
 && /opt/microfactory/.venv/bin/pip install --no-cache-dir ".[gateway,mes]"

# --- runtime: the venv only, a non-root user ---------------------------------------------
FROM python:3.11-slim-bookworm
# uid/gid 1883 is also the eclipse-mosquitto image's user: the broker reads the files the
# broker-config service writes for it without a chown of its own
RUN groupadd --system --gid 1883 microfactory \
 && useradd --system --uid 1883 --gid 1883 --home-dir /var/lib/microfactory --no-create-home \
      --shell /usr/sbin/nologin microfactory \
 && install -d -o 1883 -g 1883 -m 0750 /var/lib/microfactory /etc/microfactory/broker
COPY --from=build /opt/microfactory/.venv /opt/microfactory/.venv
ENV PATH=/opt/microfactory/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MICROFACTORY_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz
WORKDIR /var/lib/microfactory
USER 1883:1883
EXPOSE 9108 8081
# urlopen raises on a 503 (or no answer): the exit status is the health. The MES overrides
# the URL with MICROFACTORY_HEALTHCHECK_URL=http://127.0.0.1:8081/api/v1/health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MICROFACTORY_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["microfactory"]
CMD ["--help"]
