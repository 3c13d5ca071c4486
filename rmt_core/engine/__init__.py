"""The model (layer 1): RMTConfig, the memory seam (memory/: MemoryType, register_memory,
TokenMemory), the segment layout and masks, attention implementations and probes, RMTModel
(run_segment / forward / generate), backbones, devices, placement.

Imports only rmt_core.errors / checks. Knows nothing of traces, files or training.
"""
