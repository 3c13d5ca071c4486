"""Add the `operating_range` entry (rmt_core.operating_range) to a shipped card that lacks it,
from the card's own evaluation tables; weights untouched. Rewrites config.json (same JSON layout as
save_checkpoint: indent 2, sorted keys) and README.md (io.checkpoint.model_card).

    python scripts/add_operating_range.py checkpoints/austen-pydocs-recall
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import rmt_core
from rmt_core.io.checkpoint import model_card
from rmt_core.operating_range import operating_range_entry


def main(folder: str) -> None:
    path = Path(folder)
    config = json.loads((path / "config.json").read_text())
    card = config["card"]
    entry = operating_range_entry(config["rmt"].get("task", ""), card.get("evaluation_results") or {})
    if entry is None:
        print(f"{path}: task {config['rmt'].get('task')!r} asks no questions; card unchanged")
        return
    card["operating_range"] = entry
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    (path / "README.md").write_text(model_card(rmt_core.load(str(path)), card))
    print(f"{path}: operating_range added")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        main(arg)
