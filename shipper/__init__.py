"""flume-ship: tail files into a durable on-disk channel and ship them to Flume Avro collectors.

The pipeline is files -> tail source -> channel (SQLite) -> sink -> Avro RPC client -> collectors,
one package per stage: ``tail``, ``channel``, ``sink`` (over ``transport`` and the sans-IO protocol
core ``avroipc``), ``collector``; ``agent`` runs them, ``ops`` reports on them, ``cli`` is the
command line. docs/architecture.md describes the layout; docs/ has the design of each stage.
"""

__version__ = "0.1.0"
