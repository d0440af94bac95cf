"""Batches for training and evaluation: a seeded, sharded order, resumable mid-epoch, and the augmentation.

``make_loader`` returns ``Batches``: a DataLoader over the dataset whose batch order comes from
``ShardedBatchSampler`` (the shuffle depends on (seed, epoch) only; N processes with batch b read
exactly what one process with batch N*b reads; no sample is repeated to even out the shards, so
evaluation over a split is exact). ``set_epoch(epoch, skip)`` picks the epoch's shuffle and, for a
run resumed in the middle of an epoch, starts after the batches it has already trained on.

Augmentation (``vqgen.data.augment``): ``max_shift`` > 0 moves each training image by up to that
many whole pixels, ``flip`` mirrors half of them. Both are functions of (seed, epoch, index) alone,
applied to the whole batch at once: resuming, the batch size and the number of processes do not
change what any image looks like.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vqgen import distributed as dist
from vqgen.data.augment import draw_flips, draw_shifts, flip_images, shift_images
from vqgen.errors import VQGenError


class _Resumable(Sampler[list[int]]):
    """The sharded batch order of one epoch, optionally starting after its first few batches."""

    def __init__(self, batches: dist.ShardedBatchSampler):
        self.batches = batches
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.skip, None)


class _WithIndex(Dataset):
    """``(item..., index)``: the batch then knows which images it holds (their augmentation depends on it)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return (*self.dataset[i], i)


class Batches:
    """Iterate for ``(images, labels)`` batches; ``set_epoch`` before each pass when training."""

    def __init__(self, dataset: Dataset, sampler: dist.ShardedBatchSampler, max_shift: int, flip: bool,
                 loader_args: dict):
        self.sampler = _Resumable(sampler)
        self.max_shift, self.flip = max_shift, flip
        self.shifts: torch.Tensor | None = None
        self.flips: torch.Tensor | None = None
        source = _WithIndex(dataset) if self.augments else dataset
        self.loader = DataLoader(source, batch_sampler=self.sampler, **loader_args)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the shuffle (and the shifts) of ``epoch``; the pass starts after ``skip`` batches.

        Every rank must pass the same numbers. The skip holds until the next ``set_epoch``, so an
        extra pass over the batches cannot use it up.
        """
        self.sampler.batches.set_epoch(epoch)
        self.sampler.skip = skip
        self.shifts = self.flips = None

    @property
    def augments(self) -> bool:
        return bool(self.max_shift or self.flip)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        if not self.augments:
            yield from self.loader
            return
        b = self.sampler.batches
        if self.shifts is None:
            self.shifts = draw_shifts(b.num_items * b.variants, self.max_shift, b.seed, b.epoch or 0)
            self.flips = draw_flips(b.num_items * b.variants, b.seed, b.epoch or 0) if self.flip else None
        for images, labels, indices in self.loader:
            if self.max_shift:
                images = shift_images(images, self.shifts[indices])
            if self.flips is not None:
                images = flip_images(images, self.flips[indices])
            yield images, labels


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    max_shift: int = 0,
    flip: bool = False,
    variants: int = 1,
) -> Batches:
    """Seeded batches; ``batch_size`` is per process, and under torchrun each rank reads its own shard.

    ``variants`` V: the dataset holds V versions of each item, one after another; each pass reads one of them
    per item (``dist.ShardedBatchSampler``)."""
    if batch_size < 1:
        raise VQGenError(f"--batch-size must be positive, not {batch_size}")
    if max_shift < 0:
        raise VQGenError(f"--augment-shift must be 0 or more pixels, not {max_shift}")
    if variants < 1 or len(dataset) % variants:
        raise VQGenError(f"a dataset of {len(dataset)} items cannot hold {variants} versions of each")
    sampler = dist.ShardedBatchSampler(len(dataset) // variants, batch_size, shuffle=shuffle, seed=seed,
                                       drop_last=drop_last, variants=variants)
    loader_args = {
        "generator": torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
    }
    return Batches(dataset, sampler, max_shift, flip, loader_args)
