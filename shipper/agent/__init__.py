"""The agent: configuration, and the wiring of tail sources, the channel and sink workers."""
