"""The tail source: files -> complete lines -> events, with file identity, rotation and offsets.

``identity`` (which stored offset belongs to which file), ``reader`` (bytes to line events, the
hot path), ``source`` (discovery, rotation, service, commit), ``watch`` (watchdog wake-ups), ``options`` (typed options and the
status rows). The design, and what copytruncate can lose, is in docs/tail.md.
"""

from shipper.tail.options import FileStatus, TailOptions
from shipper.tail.source import TailSource

__all__ = ["FileStatus", "TailOptions", "TailSource"]
