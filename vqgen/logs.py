"""What a run tells the user: JSONL metrics logs, progress bars, notes and warnings (rank 0 only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vqgen import distributed as dist
from vqgen.formats.files import atomic_write_text


class JsonlLog:
    """One JSON object per line, one line per ``write``; only rank 0 writes.

    The whole file is rewritten through a temporary name on every write (a log holds one line per
    epoch, so this is cheap): a crash never leaves a half-written line, and nothing is created
    before the first record. ``records`` are the lines so far (a resumed run passes its history).
    """

    def __init__(self, path: Path, records: list[dict[str, Any]] | None = None):
        self.path = path
        self.records = records if records is not None else []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if dist.is_main():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress(iterable, total: int, desc: str, initial: int = 0) -> Iterator:
    """tqdm bar on rank 0 (silent elsewhere).

    Plain tqdm, not tqdm.auto: the latter's asyncio mixin calls ``iter()`` on the iterable up front,
    which for a DataLoader builds a second, unused iterator every epoch (and starts its workers).
    """
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, initial=initial, disable=not dist.is_main(), leave=False, dynamic_ncols=True
    )


def say(text: str, style: str | None = None) -> None:
    """One line on stderr from rank 0: notes and warnings (results go to stdout)."""
    if not dist.is_main():
        return
    from rich.console import Console

    Console(stderr=True).print(f"[{style}]{text}[/{style}]" if style else text, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    say(f"warning: {text}", "yellow")
