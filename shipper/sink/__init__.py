"""The sink stage: the retry/failover policy, the worker's take-send-ack loop, the blocking client."""
