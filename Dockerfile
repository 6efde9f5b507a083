# flm-gateway container image.
#   docker build -t flm-gateway .
#   docker run -p 8088:8088 -v $PWD/flm.yaml:/etc/flm-gateway/flm.yaml:ro \
#              -v flm-state:/var/lib/flm-gateway flm-gateway
# The config lives at /etc/flm-gateway/flm.yaml, state (certificates, keys, the
# state database) at /var/lib/flm-gateway.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY flm_gateway ./flm_gateway
RUN pip install --no-compile . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/flm-gateway --create-home flm \
    && mkdir -p /etc/flm-gateway
COPY docker/flm.yaml /etc/flm-gateway/flm.yaml

USER flm
WORKDIR /var/lib/flm-gateway
EXPOSE 8088 9090
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8088/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["flm-gateway"]
CMD ["run", "--config", "/etc/flm-gateway/flm.yaml"]
