"""Hidden-state capture (stage `capture`): residual-stream states of every rollout, streamed to disk.

`capture(...)` writes a capture directory (docs/artifacts.md, docs/capture.md); `CaptureReader` reads it.
"""

from rewardscope.capture.extract import capture
from rewardscope.capture.reader import CaptureReader

__all__ = ["CaptureReader", "capture"]
