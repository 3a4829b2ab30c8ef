"""The stages' fixed chunks: what every process of a run agrees on, and how evenly they share."""

import pytest

from probe.data import Prompt
from probe.parallel import World
from probe.pipeline import CHUNK_GROUPS, MIN_CHUNK_SIZE, chunks_of, costliest_first


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


@pytest.mark.parametrize("count", [2, 5, 6, 11, 12, 13, 20, 23, 24, 28, 31])
def test_fewer_prompts_make_a_power_of_two_chunks_of_at_least_the_minimum_size(count: int) -> None:
    """An attack on 28 prompts was 7 chunks of 4: one of two processes got 16 prompts, the
    other 12. Now it is 8 chunks of 3 or 4, and any count splits into 1, 2, 4 or 8 chunks."""
    lengths = [len(c) for c in chunks_of(_prompts(count), 16)]
    assert len(lengths) in (1, 2, 4, 8)
    assert len(lengths) == 1 or min(lengths) >= MIN_CHUNK_SIZE
    assert len(lengths) == CHUNK_GROUPS or count < CHUNK_GROUPS * MIN_CHUNK_SIZE
    # and the most chunks that rule allows: twice as many would fall under the minimum
    assert len(lengths) == CHUNK_GROUPS or 2 * len(lengths) * MIN_CHUNK_SIZE > count


def test_chunk_sizes_of_small_runs() -> None:
    assert [len(c) for c in chunks_of(_prompts(12), 16)] == [3, 3, 3, 3]
    assert [len(c) for c in chunks_of(_prompts(28), 16)] == [4, 4, 4, 4, 3, 3, 3, 3]
    assert [len(c) for c in chunks_of(_prompts(5), 16)] == [5]


def test_ranks_claim_the_longest_requests_first() -> None:
    """The chunk claimed last is the cheapest, so the rank that waits for it waits least."""
    texts = ["short", "a much longer request than the others", "mid length one", "tiny"]
    chunks = [[Prompt(t, f"p{i}", "benign")] for i, t in enumerate(texts)]
    assert costliest_first(chunks) == [1, 2, 0, 3]
    assert costliest_first([[p] for p in _prompts(3)]) == [0, 1, 2]  # ties keep chunk order
