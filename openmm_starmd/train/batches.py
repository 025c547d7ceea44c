"""Random training batches, built in the training process or by DataLoader worker processes.

Batch ``b`` of a stream is a pure function of ``(seed, b)``: its items are drawn with a generator seeded
from both, so a run resumed at step ``s`` continues with batch ``s`` on every rank, and worker processes
(which build batches ahead of time, in parallel) give exactly the batches the training process would.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from openmm_starmd.data.dataset import mixed_generator
from openmm_starmd.errors import StarMDError

Key = tuple[int, int]  # (epoch, item index)


class _KeyedItems(Dataset):
    """``dataset[(epoch, index)]``: selects the epoch (datasets with ``set_epoch``) then the item.

    Workers hold copies of the dataset, so the epoch has to travel with each index."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> dict:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _BatchKeys(Sampler):
    """Endless batches of keys from batch number ``start`` on."""

    def __init__(self, sampler: BatchSampler, start: int) -> None:
        self.sampler, self.start = sampler, start

    def __iter__(self) -> Iterator[list[Key]]:
        number = self.start
        while True:
            yield self.sampler.keys(number)
            number += 1


class BatchSampler:
    """Random batches of windows from a map-style dataset, one stream per seed (per DDP rank).

    Parameters
    ----------
    dataset
        Map-style dataset; one with ``set_epoch`` (items fixed within an epoch) moves to epoch ``e`` for
        draws ``e * len(dataset)`` to ``(e + 1) * len(dataset) - 1``.
    batch_size
        Items per batch.
    seed
        Seed of the stream.
    collate
        Turns a list of items into a batch.
    workers
        DataLoader worker processes building batches ahead (0: build each batch when asked).
    start
        Number of the first batch to return (a resumed run passes its step).
    pin_memory
        Page-locked batches for faster copies to a GPU (workers only).
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, collate: Callable[[list], dict], workers: int = 0,
                 start: int = 0, pin_memory: bool = False) -> None:
        if len(dataset) == 0:
            raise StarMDError("the training data has no windows: give longer trajectories or a smaller window")
        if workers < 0:
            raise StarMDError(f"workers must be 0 or more, got {workers}")
        self.items = _KeyedItems(dataset)
        self.batch_size, self.seed, self.collate, self.workers = batch_size, seed, collate, workers
        self.pin_memory = pin_memory
        self.position = start  # number of the next batch returned
        self._loader: Iterator[dict] | None = None

    def keys(self, number: int) -> list[Key]:
        """The (epoch, index) keys of batch ``number``."""
        g = mixed_generator(self.seed, number)
        n = len(self.items)
        first = number * self.batch_size
        return [((first + j) // n, int(torch.randint(n, (), generator=g))) for j in range(self.batch_size)]

    def next(self) -> dict:
        """The next batch."""
        if self.workers == 0:
            batch = self.collate([self.items[key] for key in self.keys(self.position)])
        else:
            if self._loader is None:  # started on first use, so a resumed position is honoured
                # forkserver: a worker starts from a clean process, not a copy of this one (whose OpenMM threads,
                # CUDA state or traced rollouts a forked child must not touch; one forked worker segfaulted in CI)
                context = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
                self._loader = iter(DataLoader(
                    self.items, batch_sampler=_BatchKeys(self, self.position), collate_fn=self.collate,
                    num_workers=self.workers, persistent_workers=True, prefetch_factor=4,
                    pin_memory=self.pin_memory, multiprocessing_context=context,
                ))
            batch = next(self._loader)
        self.position += 1
        return batch
