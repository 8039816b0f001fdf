"""Validation of a card's artifacts -> report.json, report.md, tradeoff.png: which file to ship.

The work is in three modules, one job each: `measure` (per file: size, load, flags, accuracy, latency),
`render` (markdown table, plot) and `select` (floors, pick). This module is their public face.
"""

from __future__ import annotations

from videoseal_tflite.validate.measure import validate_card
from videoseal_tflite.validate.render import report_markdown, tradeoff_plot, write_report
from videoseal_tflite.validate.select import below_floor, pick

__all__ = [
    "below_floor",
    "pick",
    "report_markdown",
    "tradeoff_plot",
    "validate_card",
    "write_report",
]
