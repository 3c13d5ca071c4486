"""The card's operating range, for the trainer: its one home is :mod:`rmt_core.operating_range`
(at the base of the package map, so that explain/ reads it without importing training/); the
names are re-exported here so that ``rmt_core.training.operating_range`` keeps working."""
from __future__ import annotations

from ..operating_range import (ACCURACY_COLUMN, RECALL_TABLES, TASK_TRAINING, OperatingRange, operating_range_entry,
                               read_operating_range)

__all__ = ["OperatingRange", "operating_range_entry", "read_operating_range", "TASK_TRAINING", "RECALL_TABLES",
           "ACCURACY_COLUMN"]
