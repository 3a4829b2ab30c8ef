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
def test_runs_of_32_prompts_or_more_come_in_multiples_of_8_chunks(count: int, size: int) -> None:
    """So 2, 4 or 8 processes can share them evenly (40 prompts in batches of 16 were 3 chunks:
    one process got 24 prompts, the other 16)."""
    assert len(chunks_of(_prompts(count), size)) % 8 == 0


def test_one_process_takes_every_chunk_in_order() -> None:
    assert list(World().share(5)) == [0, 1, 2, 3, 4]


def test_small_chunks_are_not_split_below_the_minimum_size() -> None:
    assert [len(c) for c in chunks_of(_prompts(12), 16)] == [MIN_CHUNK_SIZE] * 3
    assert [len(c) for c in chunks_of(_prompts(5), 16)] == [3, 2]
