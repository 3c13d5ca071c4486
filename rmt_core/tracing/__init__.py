"""Recording a run (layer 3): records (SegmentRecord), recorder (trace_document, iter_trace),
trace (the Trace), trace_file (the file format), observables (the table of what is recorded),
topk, heap.

Imports from engine and below (never from io: a trace file is its own format).
"""
