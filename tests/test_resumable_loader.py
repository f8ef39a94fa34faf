"""The training stream of rsp_d2.data.resumable: a function of (seed, position) only, so a
loader started at iteration i yields what an uninterrupted one yields from i on, with any
number of workers."""
import itertools

import numpy as np

from rsp_d2.data.resumable import PositionedSampler, SeededMapDataset, sample_seed


def _augment(record):
    # draws from the global RNG, as Detectron2's augmentations do
    return (record["id"], float(np.random.uniform()))


def _stream(start, n, seed=3, size=5):
    sampler = PositionedSampler(size, seed, start)
    dataset = SeededMapDataset([{"id": i} for i in range(size)], _augment, seed)
    return [dataset[key] for key in itertools.islice(sampler, n)]


def test_started_stream_continues_the_uninterrupted_one():
    full = _stream(0, 17)
    for start in (1, 4, 5, 11):  # inside the first epoch, at its end, in the third
        assert _stream(start, 17 - start) == full[start:]
    # every epoch is a permutation; augmentations differ per position
    assert sorted(r[0] for r in full[:5]) == list(range(5))
    assert len({r[1] for r in full}) == len(full)


def test_global_rng_is_left_alone():
    np.random.seed(0)
    expected = np.random.uniform()
    np.random.seed(0)
    _stream(0, 3)
    assert np.random.uniform() == expected


def test_workers_do_not_change_the_stream():
    from torch.utils.data import DataLoader

    dataset = SeededMapDataset([{"id": i} for i in range(5)], _augment, 3)
    batches = {w: list(itertools.islice(DataLoader(
        dataset, sampler=PositionedSampler(5, 3, 2), batch_size=2, num_workers=w,
        collate_fn=list), 4)) for w in (0, 2)}
    assert batches[0] == batches[2]
    assert sample_seed(3, 7) != sample_seed(3, 8) != sample_seed(4, 7)
