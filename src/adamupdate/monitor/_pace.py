"""How fast progress is being made, from recent progress updates: the ETA.

``elapsed * (100 - progress) / progress`` charges the whole start-up (imports, first-call
compilation, warm caches) to every later percent: a run whose first iteration takes 3 s and
the rest 0.1 s would show an ETA of many minutes that then shrinks for a long while. Instead the
pace is measured between progress updates only, over a sliding window of the last ``window``
increases, and the first ``warmup`` increases are left out:

- the first increase ends the first iteration, which holds the start-up;
- a resumed run first sets the progress it restored, so its first real iteration is the
  second increase.

With the default ``warmup=2`` the ETA is known from the third increase on and is ``None``
before (shown as ``--:--``).
"""

from __future__ import annotations

from collections import deque


class Pace:
    """Seconds per percent of progress over the recent updates.

    Parameters
    ----------
    window : int, default 100
        Number of recent progress increases the pace is measured over (enough to average
        over occasional slow iterations, such as an evaluation at an epoch's end).
    warmup : int, default 2
        Progress increases whose durations are not used; the pace starts at the time of the
        ``warmup``-th increase.

    Examples
    --------
    >>> pace = Pace(window=10, warmup=1)
    >>> for t, p in [(30.0, 1.0), (31.0, 2.0), (32.0, 3.0)]:  # start-up took 30 s
    ...     pace.add(t, p)
    >>> pace.eta(now=32.0)  # 97 % left at 1 s per percent; not 97 * 32 / 3
    97.0
    """

    def __init__(self, window: int = 100, warmup: int = 2) -> None:
        if window < 1 or warmup < 1:
            raise ValueError(f"window and warmup must be >= 1, got {window} and {warmup}")
        self._warmup = warmup
        self._seen = 0
        self._samples: deque[tuple[float, float]] = deque(maxlen=window + 1)

    def add(self, time: float, progress: float) -> None:
        """Note that ``progress`` (percent) was reached at ``time`` (seconds, any origin)."""
        if self._samples and progress < self._samples[-1][1]:
            # Progress went back (a restarted loop): what was measured no longer applies.
            self._samples.clear()
        elif self._samples and progress == self._samples[-1][1]:
            return
        self._seen += 1
        if self._seen >= self._warmup:
            self._samples.append((time, progress))

    def seconds_per_percent(self) -> float | None:
        """The pace over the window, or ``None`` before two usable updates."""
        if len(self._samples) < 2:
            return None
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        return (t1 - t0) / (p1 - p0)

    def eta(self, now: float) -> float | None:
        """Seconds left at ``now``: the remaining percent at the current pace, minus the time
        since the last update (so a live display counts down between updates)."""
        pace = self.seconds_per_percent()
        if pace is None:
            return None
        last_time, last_progress = self._samples[-1]
        return max(0.0, (100.0 - last_progress) * pace - max(0.0, now - last_time))
