"""engine: a real-time, GPU-native render engine for live visuals.

Frame path, one module per stage:
    control (OSC, thermal, mappings) -> params -> source -> generator -> upload/interop -> shaders (gl) -> sinks
"""

__version__ = "0.1.0"
