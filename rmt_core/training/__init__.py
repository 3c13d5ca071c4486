"""Data and learning (layer 4): corpus, tokenizer, tasks/, recipes, loop (train), evaluation,
shipping (evaluate and write a checkpoint with its card).

Imports from io, engine and below.
"""
