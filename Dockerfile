# aiosfu image: one image for `aiosfu serve`, `aiosfu signal`, `aiosfu sfu` and `aiosfu token`
# (docs/deployment.md). Every wheel it installs (aiortc, PyAV with its FFmpeg, pylibsrtp,
# cryptography, grpcio) carries its own native libraries, so no compiler and no -dev
# package is needed in either stage.
FROM python:3.11-slim-trixie AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/aiosfu && /opt/aiosfu/bin/pip install --no-cache-dir '.[server]'

FROM python:3.11-slim-trixie
# tini: PID 1 that hands SIGTERM to aiosfu (which drains on it) and reaps children;
# ca-certificates: TLS towards etcd, NATS, Redis or a TURN server that use it.
# Versions are the base tag's Debian release (DL3008): exact ones leave the archive at
# each point release and would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/aiosfu --create-home aiosfu
COPY --from=build /opt/aiosfu /opt/aiosfu
ENV PATH=/opt/aiosfu/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AIOSFU_RECORD_DIR=/var/lib/aiosfu/recordings
WORKDIR /var/lib/aiosfu
USER 10001:10001
# 8080: HTTP and WebSocket (signal nodes, `serve`); 50051: gRPC (SFU nodes).
# Media is UDP on ephemeral ports: run media nodes with host networking.
EXPOSE 8080/tcp 50051/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "aiosfu"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
