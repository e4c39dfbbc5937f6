"""The collector stage (``flume-ship collect``): the Avro RPC server and the files it writes."""
