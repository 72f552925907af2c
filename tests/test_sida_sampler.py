"""Class-homogeneous batch sampler (official utils/batch_sampler.py behaviour)."""

import pytest

from bench.errors import UserError
from sida.sampler import ClassHomogeneousBatchSampler

LABELS = [0] * 7 + [1] * 5 + [2] * 9


def test_every_batch_is_one_class_and_incomplete_batches_are_dropped():
    sampler = ClassHomogeneousBatchSampler(LABELS, batch_size=2, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 2 + 4
    for batch in batches:
        assert len(batch) == 2 and len({LABELS[i] for i in batch}) == 1
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))  # no index twice
    per_class = {c: sum(LABELS[i] == c for i in flat) for c in (0, 1, 2)}
    assert per_class == {0: 6, 1: 4, 2: 8}


def test_batches_of_classes_are_interleaved_and_seeded():
    a = list(ClassHomogeneousBatchSampler(LABELS, batch_size=1, seed=0))
    b = list(ClassHomogeneousBatchSampler(LABELS, batch_size=1, seed=0))
    c = list(ClassHomogeneousBatchSampler(LABELS, batch_size=1, seed=1))
    assert a == b and a != c
    order = [LABELS[batch[0]] for batch in a]
    assert order != sorted(order)  # class-wise batches are shuffled together


def test_set_epoch_changes_the_order_reproducibly():
    sampler = ClassHomogeneousBatchSampler(LABELS, batch_size=2, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert first != second and list(sampler) == first


def test_ranks_get_disjoint_equal_shares():
    shares = [list(ClassHomogeneousBatchSampler(LABELS, 2, seed=5, world_size=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 4
    assert not {tuple(b) for b in shares[0]} & {tuple(b) for b in shares[1]}


def test_errors_are_user_errors():
    with pytest.raises(UserError, match="full batch"):
        ClassHomogeneousBatchSampler([0, 1, 2], batch_size=2)
    with pytest.raises(UserError, match="batch_size"):
        ClassHomogeneousBatchSampler(LABELS, batch_size=0)
