"""Session-state keys, in one place."""
from __future__ import annotations

CHECKPOINT = "checkpoint"  # selected checkpoint name or folder
LOCAL_FOLDER = "local_folder"
LOCAL_SEGMENT_SIZE = "local_segment_size"  # what a foreign checkpoint does not store (app/views/local_checkpoint.py)
LOCAL_BACKBONE = "local_backbone"
LOCAL_TRUST_PICKLE = "local_trust_pickle"
SOURCE = "document_source"
PASTED = "pasted_text"
TRACE = "trace"  # the current rmt_core.Trace
DOC_META = "doc_meta"  # facts about the traced document (name, fact spans, answer)
RUNNING = "running"  # True while a run is in progress (survives a Cancel rerun)
RUN_MESSAGE = "run_message"  # what the last run ended with (shown once)
SEGMENT = "segment"  # the selected segment, shared by every page
ATTENTION_CACHE = "attention_cache"  # (trace id, segment) -> recomputed attention
MODEL_ERROR = "model_error"
ATTRIBUTION_CACHE = "attribution_cache"
TOUR_STEP = "tour_step"
