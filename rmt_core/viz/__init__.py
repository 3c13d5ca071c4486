"""Figures and exports (layer 6): figures (pure data -> plotly figure), render, bertviz_views,
report, export, paper, tour.

Imports from every layer below; nothing below imports from here.
"""
