"""What a run tells the user: JSONL metrics logs, progress bars, notes and warnings (rank 0 only)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
    """tqdm bar on rank 0 (silent elsewhere); when stderr is not a terminal, ``LineProgress`` instead.

    Plain tqdm, not tqdm.auto: the latter's asyncio mixin calls ``iter()`` on the iterable up front,
    which for a DataLoader builds a second, unused iterator every epoch (and starts its workers).
    """
    if not sys.stderr.isatty():
        return LineProgress(iterable, total, desc, initial, quiet=not dist.is_main())
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, initial=initial, disable=not dist.is_main(), leave=False, dynamic_ncols=True
    )


class LineProgress:
    """Progress for a log file: one line when the loop ends, and while a loop runs longer than ``long_s``
    seconds one line per tenth of it; never a carriage return (a redrawn bar fills a log with frames)."""

    def __init__(self, iterable: Iterable, total: int, desc: str, initial: int = 0, quiet: bool = False,
                 long_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.iterable, self.total, self.desc, self.initial = iterable, total, desc, initial
        self.quiet, self.long_s, self.clock = quiet, long_s, clock
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def __iter__(self) -> Iterator:
        start = self.clock()
        done, next_tenth = self.initial, 1
        for item in self.iterable:
            yield item
            done += 1
            while self.total and next_tenth < 10 and done * 10 >= next_tenth * self.total:
                next_tenth += 1
                if self.clock() - start > self.long_s:
                    self.write(done, self.clock() - start)
        self.write(done, self.clock() - start)

    def write(self, done: int, seconds: float) -> None:
        if self.quiet:
            return
        rate = (done - self.initial) / seconds if seconds > 0 else 0.0
        shown = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"{self.desc}: {done}/{self.total} in {seconds:.1f}s ({rate:.1f}/s){shown}", file=sys.stderr, flush=True)


def say(text: str, style: str | None = None) -> None:
    """One line on stderr from rank 0: notes and warnings (results go to stdout)."""
    if not dist.is_main():
        return
    from rich.console import Console

    Console(stderr=True).print(f"[{style}]{text}[/{style}]" if style else text, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    say(f"warning: {text}", "yellow")
