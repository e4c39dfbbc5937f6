# flume-ship in a container: tail the host's logs (mounted read-only) and ship them to collectors.
#   docker build -t flume-ship .
#   docker run -d -v /var/log:/host/log:ro -v flume-ship-state:/var/lib/flume-ship \
#     flume-ship tail '/host/log/app/*.log' --to collector.example:41414
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY shipper ./shipper
RUN pip install --no-cache-dir . && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /var/lib/flume-ship --create-home flume-ship

USER flume-ship
WORKDIR /var/lib/flume-ship
VOLUME ["/var/lib/flume-ship"]
ENV FLUME_SHIP_STATE_DIR=/var/lib/flume-ship
ENTRYPOINT ["flume-ship"]
CMD ["--help"]
