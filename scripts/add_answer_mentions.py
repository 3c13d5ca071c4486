"""Measure the answer-mentions table (does one trained answer word named outside the facts take the
answer?) of shipped fact-recall checkpoints and write it into their cards; weights untouched
(rmt_core.training.shipping.add_answer_mentions_to_card). About 2 minutes per model on one thread.

    python scripts/add_answer_mentions.py checkpoints/austen-pydocs-recall checkpoints/armt-austen-pydocs-recall
"""
from __future__ import annotations

import argparse
import json

import torch

from rmt_core.training.evaluation import format_table
from rmt_core.training.shipping import add_answer_mentions_to_card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="shipped checkpoint folders or names")
    parser.add_argument("--samples", type=int, default=200, help="samples per document length (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for folder in args.folders:
        path = add_answer_mentions_to_card(folder, args.samples)
        rows = json.loads((path / "config.json").read_text())["card"]["evaluation_results"]["answer_mentions"]
        print(f"{path}:\n{format_table(rows)}")


if __name__ == "__main__":
    main()
