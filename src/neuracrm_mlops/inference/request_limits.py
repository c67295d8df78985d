"""Abuse limits of the prediction service: body size, content type, API key shape and rate limits.

Everything here is decided from the request line and headers (and, for the body limit, from the bytes
as they arrive), before any database work and before the body is parsed, so that hostile traffic costs
the service as little as possible:

- a body larger than ``max_request_bytes`` gets 413 (from ``Content-Length`` when there is one, else
  while a chunked body streams in) and is never parsed;
- a content type other than ``application/json`` gets 415;
- a bearer token that cannot be a NeuraCRM key (``looks_like_api_key``) gets 401 without a lookup;
- token buckets per client address (every request), per API key (every authenticated request) and per
  client address for failed key lookups answer 429 with ``Retry-After``. Past its failure burst, an
  address gets 429 for any key that is not already in the key cache, so a flood of random keys costs
  at most ``auth_failures_per_second`` database lookups per address and worker.
- the 429 for an address over its rate or its unknown-key budget is held ``abuse_hold_seconds``
  (``AbuseHold``) before it is sent: a refusal still costs the HTTP parsing, and a client that floods
  on keep-alive connections (sending the next request when the answer comes) is slowed to one request
  per connection per hold instead of as many as the service can refuse. A held refusal costs a
  sleeping task; at most ``abuse_hold_max`` are held per worker, past that refusals go out at once.
  A tenant over its own key's rate is not held (its 429 says when to retry, at once).

The buckets live in memory, one set per worker process (BentoML runs ``NEURACRM_SERVING_WORKERS``
of them and the kernel deals connections out between them): with N workers a client may get up to N
times the configured rates. They are bounded in size (``BucketTable.max_keys``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass

from starlette.types import Message, Receive

from neuracrm_mlops.config import Settings
from neuracrm_mlops.store.orgs import API_KEY_PREFIX

# orgs.new_api_key: "ncrm_" + 43 URL-safe characters; seeding.seeded_api_key: "ncrm_seed_" + 40 hex
API_KEY_SHAPE = re.compile(re.escape(API_KEY_PREFIX) + r"[A-Za-z0-9_-]{32,128}")
API_KEY_SHAPE_TEXT = f"'{API_KEY_PREFIX}' followed by 32 to 128 letters, digits, '-' or '_'"
JSON_MEDIA_TYPE = "application/json"


def looks_like_api_key(token: str) -> bool:
    """Whether ``token`` has the shape of a key this platform issues (checked before any lookup)."""
    return API_KEY_SHAPE.fullmatch(token) is not None


def json_content_type_problem(content_type: str | None) -> str | None:
    """Why a ``Content-Type`` header is not acceptable for a JSON body, or None when it is.

    ``application/json``, any case, with optional parameters; a ``charset`` parameter must be UTF-8
    (the only encoding JSON allows between systems, RFC 8259)."""
    if content_type is None or not content_type.strip():
        return "the request has no Content-Type: send 'Content-Type: application/json'"
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        shown = content_type.strip()[:100]
        return f"unsupported Content-Type {shown!r}: this API accepts 'application/json' only"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"unsupported charset {value.strip()[:40]!r}: JSON bodies must be UTF-8"
    return None


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value (whole seconds, at least 1) for a wait in seconds."""
    return max(1, math.ceil(wait))


class BucketTable:
    """Token buckets by key (client address, API key): ``rate`` tokens a second up to ``burst``.

    Not thread-safe: used from one event loop. Bounded: past ``max_keys`` entries the buckets that
    have refilled completely (idle clients) are dropped, then the oldest half if that was not enough
    (a dropped bucket starts full again, so dropping errs on the side of letting traffic through).
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 50_000) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate >= 0 and burst >= 1, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, time of the last refill]

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._shrink(now)
            bucket = self._buckets[key] = [float(self.burst), now]
        else:
            tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[0], bucket[1] = tokens, now
        return bucket

    def _shrink(self, now: float) -> None:
        full = [
            key
            for key, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            for key in list(self._buckets)[: len(self._buckets) // 2 + 1]:
                del self._buckets[key]

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be (nothing taken)."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._bucket(key, now)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate

    def give_back(self, key: str) -> None:
        """Return a token taken by ``take`` (a reservation that turned out not to be needed)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(float(self.burst), bucket[0] + 1.0)


class AbuseHold:
    """Holds refusals to abusive clients for a while before they are sent (see the module docstring).

    Used from one event loop; ``held`` is how many refusals wait right now."""

    def __init__(self, seconds: float, max_held: int) -> None:
        if seconds < 0 or max_held < 0:
            raise ValueError(f"an abuse hold needs seconds >= 0 and max_held >= 0, got {seconds}, {max_held}")
        self.seconds = seconds
        self.max_held = max_held
        self.held = 0

    def seconds_for(self, retry_after: int) -> float:
        """How long to hold a refusal whose ``Retry-After`` is ``retry_after`` seconds (0: send it now)."""
        if self.held >= self.max_held:
            return 0.0
        return min(self.seconds, float(retry_after))

    async def hold(self, retry_after: int) -> float:
        """Wait before a refusal is sent; returns the seconds held."""
        seconds = self.seconds_for(retry_after)
        if seconds <= 0:
            return 0.0
        self.held += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.held -= 1
        return seconds


@dataclass
class RequestLimits:
    """The limits one worker process enforces (from the settings), with their bucket tables."""

    max_request_bytes: int
    per_key: BucketTable
    per_address: BucketTable
    auth_failures: BucketTable
    abuse_hold: AbuseHold

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            per_key=BucketTable(settings.rate_limit_key_per_second, settings.rate_limit_key_burst),
            per_address=BucketTable(
                settings.rate_limit_address_per_second, settings.rate_limit_address_burst
            ),
            auth_failures=BucketTable(settings.auth_failures_per_second, settings.auth_failure_burst),
            abuse_hold=AbuseHold(settings.abuse_hold_seconds, settings.abuse_hold_max),
        )

    def body_too_large(self, content_length: str | None) -> str | None:
        """Why the declared ``Content-Length`` is refused (413), or None."""
        if content_length is None:
            return None
        declared = content_length.strip()
        if declared.isdigit() and int(declared) <= self.max_request_bytes:
            return None
        return self.too_large_message(declared[:30])

    def too_large_message(self, size: str | None = None) -> str:
        return too_large_message(self.max_request_bytes, size)


def too_large_message(max_request_bytes: int, size: str | None = None) -> str:
    """The 413 message: the limit, the setting that sets it, and what to do."""
    what = f"the request body ({size} bytes)" if size else "the request body"
    return (
        f"{what} is larger than this service accepts ({max_request_bytes:,} bytes, "
        "NEURACRM_MAX_REQUEST_BYTES): split the batch into smaller requests"
    )


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as more than ``limit`` bytes have arrived (the rest is
    not read: answer 413 and close the connection)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read ``body`` to the application, then the real channel
    (for ``http.disconnect``)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = [
    "API_KEY_SHAPE",
    "AbuseHold",
    "BucketTable",
    "RequestLimits",
    "json_content_type_problem",
    "looks_like_api_key",
    "read_body",
    "replay_body",
    "retry_after_seconds",
    "too_large_message",
]
