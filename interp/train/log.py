"""A run's metrics log: every record kept in memory, and (where the run writes) appended as one
JSON line to output_dir/metrics.jsonl. A killed run leaves at worst a torn last line, which
`read_metrics` skips; a resumed run drops the records logged after its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from interp.io import user_errors, write_text
from interp.train.metrics import read_metrics

FILENAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, path: Path | None, records: list[dict] | None = None):
        self.path = path  # the metrics.jsonl appended to (None: keep the records in memory only)
        self.records = records or []  # every record of the run up to now

    @classmethod
    def start(cls, output_dir: Path | None, step: int) -> MetricsLog:
        """The log of a run continuing at `step`: the records up to `step` (a fresh run: none),
        with the file rewritten atomically to hold just them."""
        if output_dir is None:
            return cls(None)
        path = output_dir / FILENAME
        records = [r for r in read_metrics(path) if r.get("step", 0) <= step] if step > 0 and path.is_file() else []
        write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        return cls(path, records)

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with user_errors(self.path), open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
