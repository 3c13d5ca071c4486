"""What a trace means (layer 5): analysis, series, attribution, interventions, answers.

Imports from training (task vocabulary), tracing, io, engine and below.
"""
