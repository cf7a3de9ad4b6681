"""A step load (the ``spike`` profile): hold each step's user count for its duration, then stop.

The steps come from the run's configuration (loadkit.py, ``steps``: users, spawn rate, seconds).
Listed in ``locust -f`` only for profiles with steps: a shape class in any loaded file takes over
from ``-u``/``-r``/``--run-time``. After the last step the test ends by itself.
"""

from __future__ import annotations

import loadkit
from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    steps = [(int(users), float(rate), float(duration)) for users, rate, duration in loadkit.CONFIG.steps]

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        end = 0.0
        for users, rate, duration in self.steps:
            end += duration
            if elapsed < end:
                return users, rate
        return None
