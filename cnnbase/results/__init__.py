"""Results: one self-describing JSON record per evaluation (records.jsonl) and the tables built from them."""

from .leaderboard import build_table, render
from .records import append_record, read_records, versions

__all__ = ["append_record", "build_table", "read_records", "render", "versions"]
