"""How the forecast fan-out is cut into mapped tasks (``chunk_ids``): the configured chunk size until
the task count would pass the cap, then larger chunks; every organization once, in order."""

from __future__ import annotations

import math

import pytest

from neuracrm_mlops.training.forecasts import chunk_ids


@pytest.mark.parametrize(
    ("organizations", "chunk_size", "max_chunks", "expected_chunks", "largest"),
    [
        (1_000, 50, 1_000, 20, 50),  # today's default: 20 mapped tasks
        (1_001, 50, 1_000, 21, 48),  # 21 chunks of 47-48, not 20 of 50 and one of 1
        (49, 50, 1_000, 1, 49),
        (10_000, 50, 1_000, 200, 50),
        (100_000, 50, 1_000, 1_000, 100),  # the cap binds: chunks double
        (100_001, 50, 1_000, 991, 101),
        (100_000, 50, 1_024, 1_021, 98),  # at Airflow's max_map_length
        (7, 1, 3, 3, 3),
    ],
)
def test_chunks_stay_under_the_cap_and_cover_every_organization_once_in_order(
    organizations: int, chunk_size: int, max_chunks: int, expected_chunks: int, largest: int
) -> None:
    ids = list(range(1, organizations + 1))
    chunks = chunk_ids(ids, chunk_size, max_chunks)
    assert len(chunks) == expected_chunks <= max_chunks
    assert [i for chunk in chunks for i in chunk] == ids
    sizes = [len(chunk) for chunk in chunks]
    assert max(sizes) == largest and max(sizes) - min(sizes) <= 1
    assert max(sizes) <= max(chunk_size, math.ceil(organizations / max_chunks))


def test_no_organizations_make_no_chunks_and_nonsense_limits_are_refused() -> None:
    assert chunk_ids([], 50, 1_000) == []
    with pytest.raises(ValueError, match="at least 1"):
        chunk_ids([1, 2], 0, 10)
    with pytest.raises(ValueError, match="at least 1"):
        chunk_ids([1, 2], 5, 0)
