"""`engine serve` (seed 004's art on demand for an ePaper frame): its own room, talking to the engine through the
generators' public interface. So far: palette.py (fit to the panel and dither to its exact colours). The HTTP server,
/transcribe, the Triton scale-out and the frame client are issue 15's remaining work."""
