"""A training loader whose stream is a function of (seed, position) only, so that a resumed
run reads exactly the data the uninterrupted run would have read.

Detectron2's ``TrainingSampler`` restarts its shuffle at every launch and its augmentations
draw from the process-global RNGs (of the main process, or of each worker, reseeded at random),
so a killed-and-resumed run sees other data than an uninterrupted one. Here the sampler starts
at a given position of the seeded infinite shuffle, and each sample is augmented under RNGs
seeded from (seed, position): the data are also independent of the number of workers.
"""
import itertools
import operator
import random
from typing import Callable, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.utils import comm

__all__ = ["PositionedSampler", "SeededMapDataset", "build_resumable_train_loader",
           "sample_seed"]


def sample_seed(seed: int, position: int) -> int:
    """The seed of the augmentations of the `position`-th sample of the stream (position =
    iteration * total batch + index in the batch)."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class PositionedSampler(Sampler):
    """Yields ``(position, dataset index)`` of Detectron2's ``TrainingSampler`` stream
    (``shuffle(range(size)) + shuffle(range(size)) + ...`` from ``torch.Generator(seed)``),
    from global position `start` on, this rank's share (``start + rank :: world_size``)."""

    def __init__(self, size: int, seed: int, start: int = 0):
        if size <= 0:
            raise ValueError(f"PositionedSampler: size {size}, expected > 0")
        self._size, self._seed, self._start = size, int(seed), int(start)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        epoch = 0
        while True:
            perm = torch.randperm(self._size, generator=g)
            # whole epochs before `start` are drawn (the generator must advance) but not listed
            if (epoch + 1) * self._size > self._start:
                yield from perm.tolist()
            else:
                yield from itertools.repeat(-1, self._size)
            epoch += 1

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        stream = itertools.islice(enumerate(self._infinite_indices()), self._start + self._rank,
                                  None, self._world_size)
        yield from stream


class SeededMapDataset(Dataset):
    """``dataset[(position, index)] = mapper(dataset[index])`` with Python's, NumPy's and
    torch's global RNGs seeded by :func:`sample_seed` for the call (and restored after), since
    Detectron2's augmentations draw from them."""

    def __init__(self, dataset: Sequence[Dict], mapper: Callable[[Dict], Dict], seed: int):
        self._dataset, self._mapper, self._seed = dataset, mapper, int(seed)

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Dict:
        position, index = key
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        seed = sample_seed(self._seed, position)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self._mapper(self._dataset[index])
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


def build_resumable_train_loader(cfg, mapper: Callable[[Dict], Dict], *, seed: int,
                                 start_iter: int = 0):
    """Detectron2's training loader (batches of IMS_PER_BATCH / world size per rank, aspect
    ratio grouping, NUM_WORKERS workers) over DATASETS.TRAIN, from iteration `start_iter` of the
    stream of `seed`.

    The position of iteration i is i * IMS_PER_BATCH: exact when every batch is taken in
    stream order, i.e. all images share one orientation or ASPECT_RATIO_GROUPING is off.
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
        if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None)
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                         f"the number of processes {world_size}")
    batch = cfg.SOLVER.IMS_PER_BATCH // world_size
    dataset = SeededMapDataset(dicts, mapper, seed)
    sampler = PositionedSampler(len(dicts), seed, start_iter * cfg.SOLVER.IMS_PER_BATCH)
    # Map-style with the sampler in the main process (not Detectron2's per-worker sharding of
    # an iterable): DataLoader returns samples in sampler order whatever the number of workers.
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        loader = DataLoader(dataset, sampler=sampler, batch_size=1,
                            num_workers=cfg.DATALOADER.NUM_WORKERS,
                            collate_fn=operator.itemgetter(0))
        return AspectRatioGroupedDataset(loader, batch)
    return DataLoader(dataset, sampler=sampler, batch_size=batch, drop_last=True,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator)
