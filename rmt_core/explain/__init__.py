"""What a trace means (layer 5): analysis, series, attribution, interventions, answers.

Imports from tracing, io, engine and below (never training: the question vocabulary is rmt_core.questions).
"""
