"""Session-state keys, in one place."""
from __future__ import annotations

CHECKPOINT = "checkpoint"  # selected checkpoint name or folder
LOCAL_FOLDER = "local_folder"
LOCAL_SEGMENT_SIZE = "local_segment_size"  # what a foreign checkpoint does not store (app/views/local_checkpoint.py)
LOCAL_BACKBONE = "local_backbone"
LOCAL_TRUST_PICKLE = "local_trust_pickle"
LOCAL_MEMORY_OPTION = "local_memory_option:"  # + option name + the checkpoint's hash: an ARMT's open memory options
SOURCE = "document_source"
PASTED = "pasted_text"
UPLOADED = "uploaded_document"  # (file id, services.Document or the error it gave) of the uploaded file, read once
TRACE = "trace"  # the current rmt_core.Trace
DOC_META = "doc_meta"  # facts about the traced document (name, fact spans, answer)
RUN_MESSAGE = "run_message"  # what the last run ended with
SEGMENT = "segment"  # the selected segment, shared by every page
ATTENTION_CACHE = "attention_cache"  # (trace id, segment) -> recomputed attention
MODEL_ERROR = "model_error"
ATTRIBUTION_CACHE = "attribution_cache"
TOUR_STEP = "tour_step"
COMPARE_TRACE = "compare_trace"  # the Compare page's second run (an rmt_core.Trace)
COMPARE_LABEL = "compare_label"  # how the second run was made ("another document", a checkpoint, a file)
COMPARE_RESULT = "compare_result"  # ((id A, id B), rmt_core.Comparison)
COMPARE_SWEEP = "compare_sweep"  # ((ids, segments), interventions.PatchSweep)
JOB = "run_job"  # the session's app.runs.RunJob (running or finished)
COLLECTED = "collected_job"  # the job whose result is installed
DOCUMENT = "document"  # the services.Document of the current trace (Ask appends questions to its body)
ANSWER = "answer"  # rmt_core.explain.answers.AskResult of the current trace, or None
RUN_ERROR = "run_error"
OWNER = "store_owner"  # app.runs.owner_of(this browser's secret), or None without one (no reload then)
TOKEN = "store_token"  # this session's key in app.runs.store() (the URL's ?doc=)
RESTORED = "restored"  # the first run of the session looked for a reload's state
PENDING_SEGMENT = "pending_segment"  # a segment to select on the next run (set where the slider already exists)
OPENED_AT = "opened_at"  # (trace, segment, why): where the pages opened after the trace came (services.opening_segment)
ASK_QUESTION = "ask_question"
ASK_ERROR = "ask_error"
ASK_WINDOW = "ask_window"  # earlier segments the answer's through-memory attribution unrolls
OPENED_TRACE = "opened_trace"  # ((upload file id, model weights hash), refusal message or None) of a .rmtrace upload
