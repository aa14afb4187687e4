"""How background loops wait between passes, and back off while the store is down.

Every long-running loop of a server (the reaper, the instance presence beat, the alert
engine, the cache invalidation listener) runs one pass, then waits. While passes fail
because the store is unreachable, waiting the normal interval would hammer a store
that is struggling to come back and flood the logs with one warning per attempt, so
:class:`LoopBackoff` makes the wait grow exponentially with jitter, up to a cap, and
drops back to the normal interval after the first pass that succeeds. It logs once when
a loop starts failing and once when it recovers, never at every attempt.

:func:`backoff_delay_s` is the same curve for one-off retries (webhook deliveries).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

DEFAULT_MAX_S: Final = 30.0
DEFAULT_JITTER: Final = 0.5

logger = logging.getLogger(__name__)


def backoff_delay_s(
    attempt: int,
    base_s: float,
    max_s: float,
    *,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait after the ``attempt``-th consecutive failure (1 for the first).

    The step doubles from ``base_s`` per attempt and is capped at ``max_s``; the wait is
    drawn uniformly from ``[step * (1 - jitter), step]`` so that many processes that
    failed together do not retry in lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be between 0 and 1")
    # Bounding the exponent keeps 2 ** n finite for any number of failures.
    step_s = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    return step_s * (1.0 - jitter * rand())


class LoopBackoff:
    """The wait before a background loop's next pass; see the module docstring.

    Call :meth:`succeeded` or :meth:`failed` after each pass and wait the seconds they
    return (with :attr:`sleep`, which tests replace to record the waits instead of
    sleeping). After ``n`` consecutive failures the wait is ``backoff_delay_s(n,
    2 * interval_s, max_s)``: at least the normal interval, growing to ``max_s``.
    ``name`` says which loop in the log lines.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        *,
        max_s: float = DEFAULT_MAX_S,
        jitter: float = DEFAULT_JITTER,
        rand: Callable[[], float] = random.random,
        log: logging.Logger = logger,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval_s <= 0 or max_s <= 0:
            raise ValueError("interval_s and max_s must be positive")
        self.name = name
        self.interval_s = interval_s
        self.max_s = max(max_s, interval_s)
        self._jitter = jitter
        self._rand = rand
        self._log = log
        self.sleep = sleep
        self.failures = 0
        """Consecutive failed passes (0 while the loop is healthy)."""

    def succeeded(self) -> float:
        """Record a good pass; the normal interval. Logs the recovery once."""
        if self.failures:
            self._log.warning("%s recovered after %d failed attempt(s)", self.name, self.failures)
        self.failures = 0
        return self.interval_s

    def failed(self, exc: BaseException) -> float:
        """Record a failed pass; the (growing) wait before the next one. Logs the
        first failure of a streak with its error; later ones only at DEBUG."""
        self.failures += 1
        delay_s = max(
            self.interval_s,
            backoff_delay_s(
                self.failures,
                2 * self.interval_s,
                self.max_s,
                jitter=self._jitter,
                rand=self._rand,
            ),
        )
        if self.failures == 1:
            self._log.warning(
                "%s failed (%s: %s); backing off, up to %.0fs between attempts",
                self.name,
                type(exc).__name__,
                exc,
                self.max_s,
            )
        else:
            self._log.debug(
                "%s failed again (%d in a row); next attempt in %.2fs",
                self.name,
                self.failures,
                delay_s,
            )
        return delay_s
