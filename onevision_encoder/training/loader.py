"""Head batches built ahead of the training step, in worker processes (``data.workers``).

Decoding videos and augmenting images can take longer than a GPU step, so with workers the batches
of the coming steps are built while the current one trains. A batch is a pure function of its picks
(every augmentation draws from the sample's own seed), so workers change the speed and nothing else:
the run is the same with any number of them. The data position a checkpoint saves is the one after
the last batch the loop consumed, not the last one built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .batches import HeadBatch, image_batch, ocr_batch, video_batch
from .config import TrainConfig
from .data import HeadStream, Sample


def head_batch(head: str, picks: list[tuple[Sample, int]], config: TrainConfig, patch_size: int) -> HeadBatch:
    """The batch of ``picks`` (samples with their seeds) for ``head``, at that head's settings."""
    settings = config.heads[head]
    if head == "image":
        return image_batch(picks, settings.resolution)
    if head == "ocr":
        return ocr_batch(picks, settings.resolution)
    return video_batch(picks, settings.video(patch_size))


Job = tuple[str, list[tuple[Sample, int]], dict[str, int]]  # head, picks, stream state after the picks


class _Builder(Dataset):
    """Runs in the workers: a job in, ``(head, number of picks, stream state, batch)`` out."""

    def __init__(self, config: TrainConfig, patch_size: int) -> None:
        self.config = config
        self.patch_size = patch_size

    def __getitem__(self, job: Job) -> tuple[str, int, dict[str, int], HeadBatch]:
        head, picks, state = job
        return head, len(picks), state, head_batch(head, picks, self.config, self.patch_size)


class BatchLoader:
    """This rank's head batches in the loop's order: every step, every micro-batch, the heads in turn."""

    def __init__(
        self, streams: dict[str, HeadStream], config: TrainConfig, patch_size: int, rank: int, world: int
    ) -> None:
        self.streams = streams
        self.batch_sizes = {head: config.heads[head].batch_size for head in streams}
        self.rank, self.world = rank, world
        self.consumed = {head: stream.state_dict() for head, stream in streams.items()}
        workers = config.data.workers
        loader = DataLoader(
            _Builder(config, patch_size),
            sampler=self._jobs(),  # iterated here, in the training process, as far ahead as the workers need
            batch_size=None,
            num_workers=workers,
            prefetch_factor=config.data.prefetch if workers else None,
            multiprocessing_context="spawn" if workers else None,  # no fork of a process holding threads
            generator=torch.Generator(),  # leaves the training RNG alone, so a resumed run stays exact
        )
        self._batches: Iterator[Any] = iter(loader)

    def _jobs(self) -> Iterator[Job]:
        while True:
            for head, stream in self.streams.items():
                picks = stream.next_batch(self.batch_sizes[head], self.rank, self.world)
                yield head, picks, stream.state_dict()

    def next(self, head: str) -> tuple[int, HeadBatch]:
        """(number of samples, batch) of ``head``'s next batch."""
        built_head, count, state, batch = next(self._batches)
        if built_head != head:
            raise RuntimeError(f"batches are built in head order: expected {head!r}, the loader built {built_head!r}")
        self.consumed[head] = state
        return count, batch

    def state_dict(self) -> dict[str, dict[str, int]]:
        """Each head's data position after the batches consumed so far (what a resumed run starts from)."""
        return {head: dict(state) for head, state in self.consumed.items()}

    def close(self) -> None:
        """Stop the workers (batches built ahead are dropped): a dropped iterator shuts its workers down."""
        self._batches = iter(())
