"""Operations: the status document, Prometheus metrics, telemetry, systemd notify and logging."""
