"""Studies: many samples at once, one row each (rmt_core's layer above explain and viz).

    source     the samples: a BABILong-style grid (task x length x fact depth x seed) over the
               shipped held-out corpora, or the user's documents (a folder, a .jsonl / .csv)
    measures   one traced sample -> one row (answer, p(answer), rank, fact segment, the segment
               through-memory attribution credits, write mass, loss with / without memory,
               logit-lens retention, the memory written after the fact for the probes)
    rows       rows.parquet, streamed in complete parts; resume reads the ids already there
    executors  in-process, N local processes, Ray Data (an actor pool, one model per actor)
    runner     run_study: provenance in study.json, resume without lost or duplicated rows
    aggregate  grid (length x depth), accuracy by length, retention, operating_range (model cards)
    probes     linear probes of memory per slot and age, and their causal check
    report     figures (rmt_core.viz.study) and CSV tables of a study
    cli        `rmt-lens study run` / `rmt-lens study report`
"""
