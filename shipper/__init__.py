"""flume-ship: tail files into a durable on-disk channel and ship them to Flume Avro collectors.

The pipeline is files -> tail source -> channel (SQLite) -> sink -> Avro RPC client -> collectors.
See docs/ for the design of each stage; ``shipper.avroipc`` is the sans-IO protocol core.
"""

__version__ = "0.1.0"
