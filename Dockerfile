# flume-ship in a container: tail the host's logs (mounted read-only) and ship them to collectors.
#
#   docker build -t flume-ship .
#   docker run -d --name flume-ship \
#     -v /var/log:/host/log:ro -v flume-ship-state:/var/lib/flume-ship \
#     flume-ship tail '/host/log/app/*.log' --to collector.example:4141
#
# Or with a config file: -v /etc/flume-ship:/etc/flume-ship:ro and `tail` with no arguments
# (the default /etc/flume-ship/flume-ship.toml is read). See docs/quickstart.md.

# --- build: a wheel of flume-ship and its dependencies, no compilers in the final image ---------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY shipper ./shipper
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run -----------------------------------------------------------------------------------------
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels flume-ship \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 flume-ship \
 && useradd --system --uid 10001 --gid flume-ship --home-dir /var/lib/flume-ship --no-create-home \
      --shell /usr/sbin/nologin flume-ship \
 && install -d -o flume-ship -g flume-ship -m 0700 /var/lib/flume-ship

# Non-root. To read logs that only root or group adm may read, add `--group-add <gid>` (e.g. the
# host's adm gid) to `docker run` rather than running as root.
USER flume-ship
WORKDIR /var/lib/flume-ship

# The channel and the file offsets: keep them on a volume, or every new container re-reads the
# logs from the start.
VOLUME ["/var/lib/flume-ship"]
ENV FLUME_SHIP_STATE_DIR=/var/lib/flume-ship \
    FLUME_SHIP_METRICS_LISTEN=0.0.0.0:9464 \
    PYTHONUNBUFFERED=1
EXPOSE 9464

# /health is 503 while events are queued and nothing was acknowledged for stall_timeout (300 s by
# default): "running" is not enough, the container turns unhealthy when delivery silently stalls.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request as u; h,_,p=os.environ['FLUME_SHIP_METRICS_LISTEN'].rpartition(':'); h='127.0.0.1' if h in ('','0.0.0.0','[::]') else h.strip('[]'); u.urlopen(f'http://{h}:{p}/health',timeout=4)"]

# SIGTERM drains in-flight batches (up to drain_timeout, 10 s): give `docker stop` -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["flume-ship"]
CMD ["--help"]
