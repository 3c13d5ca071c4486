"""Files in and out (layer 2): checkpoints (save / load / inspect, RMT Lens's own format and
the authors' formats in formats/), the local Hugging Face cache (hub), documents.

Imports from engine and below.
"""
