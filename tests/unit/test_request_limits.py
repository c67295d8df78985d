"""The abuse limits' building blocks: token buckets, the API key shape, content types, body reading."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from neuracrm_mlops.inference.request_limits import (
    AbuseHold,
    BucketTable,
    RequestLimits,
    json_content_type_problem,
    looks_like_api_key,
    read_body,
    replay_body,
    retry_after_seconds,
)
from neuracrm_mlops.serving.service import validation_error_body
from neuracrm_mlops.store.orgs import new_api_key
from neuracrm_mlops.store.seeding import seeded_api_key


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    table = BucketTable(rate=2.0, burst=3)
    assert [table.take("a", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take("a", now=10.0) == pytest.approx(0.5)  # one token in 0.5 s at 2/s
    assert table.take("b", now=10.0) == 0.0  # every key has its own bucket
    assert table.take("a", now=10.5) == 0.0
    assert table.take("a", now=10.5) == pytest.approx(0.5)
    assert table.take("a", now=100.0) == 0.0  # refilled, never past the burst
    assert [table.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_a_token_given_back_can_be_taken_again_and_rate_zero_is_no_limit() -> None:
    table = BucketTable(rate=1.0, burst=1)
    assert table.take("a", now=0.0) == 0.0
    assert table.take("a", now=0.0) > 0
    table.give_back("a")
    assert table.take("a", now=0.0) == 0.0
    unlimited = BucketTable(rate=0.0, burst=1)
    assert all(unlimited.take("a", now=0.0) == 0.0 for _ in range(1_000)) and len(unlimited) == 0


def test_the_table_stays_bounded_and_drops_idle_buckets_first() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=100)
    for i in range(100):
        table.take(f"idle-{i}", now=0.0)
    table.take("busy", now=0.0)  # full: the idle buckets (refilled by t=50) are dropped
    for i in range(1_000):
        table.take(f"key-{i}", now=50.0)
        assert len(table) <= 100
    with pytest.raises(ValueError, match="burst >= 1"):
        BucketTable(rate=1.0, burst=0)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert [retry_after_seconds(w) for w in (0.001, 0.5, 1.0, 1.2, 30.0)] == [1, 1, 1, 2, 30]


def test_issued_keys_have_the_shape_and_others_do_not() -> None:
    assert looks_like_api_key(new_api_key())
    assert looks_like_api_key(seeded_api_key(7, "Initech"))
    for token in (
        "",
        "ncrm_",
        "ncrm_short",
        "abc" * 20,
        "ncrm_" + "x" * 31,
        "ncrm_" + "x" * 129,
        "ncrm_" + "é" * 40,
    ):
        assert not looks_like_api_key(token), token
    assert not looks_like_api_key(new_api_key() + "\r")  # the CRLF key of issue 14 item 8


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("Application/JSON; charset=UTF-8", True),
        ('application/json; charset="utf-8"', True),
        ("application/json; charset=latin-1", False),
        ("multipart/form-data", False),
        ("multipart/form-data; boundary=x", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_only_json_content_types_are_accepted(content_type: str | None, accepted: bool) -> None:
    assert (json_content_type_problem(content_type) is None) == accepted


def test_a_declared_length_over_the_limit_or_unreadable_is_refused() -> None:
    limits = RequestLimits(100, BucketTable(1, 1), BucketTable(1, 1), BucketTable(1, 1), AbuseHold(0, 0))
    assert limits.body_too_large(None) is None and limits.body_too_large("100") is None
    assert "101 bytes" in (limits.body_too_large("101") or "")
    assert limits.body_too_large("-5") is not None and limits.body_too_large("1e3") is not None


def test_an_abusive_refusal_is_held_at_most_its_retry_after_and_only_up_to_max_held_at_once() -> None:
    hold = AbuseHold(seconds=0.2, max_held=2)
    assert hold.seconds_for(retry_after=5) == 0.2 and AbuseHold(3.0, 2).seconds_for(retry_after=1) == 1.0
    assert AbuseHold(0.0, 10).seconds_for(retry_after=1) == 0.0  # 0 s: no hold

    async def three_at_once() -> tuple[list[float], int]:
        tasks = [asyncio.create_task(hold.hold(retry_after=1)) for _ in range(3)]
        await asyncio.sleep(0.05)
        held_meanwhile = hold.held
        return list(await asyncio.gather(*tasks)), held_meanwhile

    held, held_meanwhile = asyncio.run(three_at_once())
    assert held == [0.2, 0.2, 0.0] and held_meanwhile == 2  # the third went out at once
    assert hold.held == 0
    with pytest.raises(ValueError, match="seconds >= 0"):
        AbuseHold(-1.0, 1)


def _receiver(chunks: list[bytes]) -> Any:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    messages.append({"type": "http.disconnect"})
    received = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(received)

    return receive


def test_the_body_is_read_up_to_the_limit_and_replayed_whole() -> None:
    assert asyncio.run(read_body(_receiver([b"ab", b"cd", b"e"]), 5)) == b"abcde"
    assert asyncio.run(read_body(_receiver([b"ab", b"cd", b"ef"]), 5)) is None  # stops at byte 6

    async def replayed() -> list[dict[str, Any]]:
        receive = replay_body(b"xyz", _receiver([b""]))
        return [await receive(), await receive()]

    first, second = asyncio.run(replayed())
    assert first == {"type": "http.request", "body": b"xyz", "more_body": False}
    assert second["type"] == "http.request"  # then the real channel


def test_bentoml_validation_errors_get_the_documented_shape() -> None:
    bentoml_body = {
        "error": "2 validation error for ScoreRequestIODescriptor",
        "detail": [
            {
                "type": "string_type",
                "loc": ["lead", "industry"],
                "msg": "Input should be a valid string",
                "url": "u",
            },
            {"type": "missing", "loc": ["leads", 0, "x"], "msg": "Field required", "url": "u"},
        ],
    }
    rewritten = json.loads(validation_error_body(json.dumps(bentoml_body).encode()) or b"")
    assert rewritten == {
        "error": "the request body is invalid at lead.industry: Input should be a valid string (and 1 more "
        "problem, see detail)",
        "detail": [
            {"loc": ["lead", "industry"], "msg": "Input should be a valid string", "type": "string_type"},
            {"loc": ["leads", 0, "x"], "msg": "Field required", "type": "missing"},
        ],
    }
    assert validation_error_body(b'{"error": "plain"}') is None and validation_error_body(b"not json") is None
