"""The stages' fixed chunks: what every process of a run agrees on, and how evenly they share."""

import pytest

from probe.data import Prompt
from probe.parallel import World
from probe.pipeline import MIN_CHUNK_SIZE, chunks_of


def _prompts(count: int) -> list[Prompt]:
    return [Prompt(f"request number {i}", f"p{i}", "benign") for i in range(count)]


@pytest.mark.parametrize("count", [0, 1, 3, 7, 12, 40, 127, 200, 1000])
@pytest.mark.parametrize("size", [1, 4, 16, 64])
def test_chunks_cover_the_prompts_in_order_within_the_batch_size(count: int, size: int) -> None:
    chunks = chunks_of(_prompts(count), size)
    assert [p.id for c in chunks for p in c] == [f"p{i}" for i in range(count)]
    lengths = [len(c) for c in chunks]
    assert all(0 < n <= size for n in lengths)
    assert not lengths or max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize(("count", "size"), [(40, 16), (64, 16), (100, 16), (200, 16), (32, 8)])
@pytest.mark.parametrize("world_size", [2, 4])
def test_processes_get_equal_shares(count: int, size: int, world_size: int) -> None:
    """Runs of at least 32 prompts; chunk k goes to rank k mod the world size (40 prompts in
    batches of 16 used to be 24 for rank 0 and 16 for rank 1)."""
    chunks = chunks_of(_prompts(count), size)
    shares = [
        sum(len(c) for k, c in enumerate(chunks) if World(rank, world_size).owns(k))
        for rank in range(world_size)
    ]
    assert sum(shares) == count
    assert max(shares) - min(shares) <= 1 + (count % world_size > 0)


def test_small_chunks_are_not_split_below_the_minimum_size() -> None:
    assert [len(c) for c in chunks_of(_prompts(12), 16)] == [MIN_CHUNK_SIZE] * 3
    assert [len(c) for c in chunks_of(_prompts(5), 16)] == [3, 2]
