"""The RMT Lens version (written into checkpoints, traces and exports)."""
__version__ = "0.1.0"
