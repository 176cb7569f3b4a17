"""Make batches ahead of time in worker processes.

Stage code writes `make_batch(step, rank, world)` as a pure function of its arguments (so a
resumed run sees the same data). Rendering and preprocessing are CPU work; on a GPU box they
would starve the model, so this wraps such a function in a torch DataLoader whose workers
compute steps start, start+1, ... in order.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


class _Steps(Dataset):
    def __init__(self, make_batch, start, stop, rank, world):
        self.make_batch, self.start, self.stop, self.rank, self.world = make_batch, start, stop, rank, world

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, i):
        return self.make_batch(self.start + i, self.rank, self.world)


class Prefetched:
    """Callable like `make_batch`; serves steps in order from `workers` processes."""

    def __init__(self, make_batch, total_steps: int, workers: int):
        self.make_batch, self.total, self.workers = make_batch, total_steps, workers
        self.next_step, self.it = None, None

    def __call__(self, step: int, rank: int = 0, world: int = 1):
        if self.workers <= 0:
            return self.make_batch(step, rank, world)
        if self.it is None or step != self.next_step:
            loader = DataLoader(_Steps(self.make_batch, step, self.total, rank, world), batch_size=None,
                                num_workers=self.workers, prefetch_factor=4, persistent_workers=False,
                                multiprocessing_context="fork")
            self.it = iter(loader)
        self.next_step = step + 1
        return next(self.it)


def to_device(batch, device):
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
