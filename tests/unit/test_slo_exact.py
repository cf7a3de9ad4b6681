"""SLO gates judge exact figures, not Locust's rounded buckets.

Locust keeps response times rounded to about two significant digits (100 ms steps from 1 s), so
its percentiles can pass an SLO the run broke, and break one it kept. A V1 stub on 127.0.0.1
answers every request after a fixed delay; the gate must judge the exact samples in both
directions (Locust's own StatsEntry against loadkit's exact samples, deterministic), and a real
run against the stub must be judged on the exact figure and record Locust's beside it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.load.app import run_loadtest
from inferbox.load.profiles import Slo
from inferbox.load.summary import SloBreached, judge


def stub(delay_s: float) -> Iterator[str]:
    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
            time.sleep(delay_s)  # the fixed service time this stub stands for
            body = json.dumps({"predictions": [1] * len(rows)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def one_second() -> Iterator[str]:
    yield from stub(1.0)


def profile(tmp_path: Path, slo: dict[str, float]) -> Path:
    data = {"schema": 1, "profiles": {"fixed": {
        "description": "fixed-delay stub", "users": 2, "spawnRate": 2, "duration": "4s", "maxRequests": 40,
        "waitTime": {"min": 0, "max": 0}, "models": ["sklearn-iris"], "tenants": ["tenant-a"],
        "protocols": {"v1": 1}, "rowsPerRequest": {"min": 1, "max": 1}, "slo": slo}}}
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def test_a_breach_locusts_buckets_would_hide_fails_the_gate(make_settings: Callable[..., Settings],
                                                            tmp_path: Path, one_second: str) -> None:
    """Every request takes over 1000 ms; Locust's bucket calls the median 1000 ms, which p50Ms 1000 passes."""
    with pytest.raises(SloBreached) as breached:
        run_loadtest(make_settings(), "sklearn-iris", None, "fixed", host=one_second,
                     profiles_path=profile(tmp_path, {"p50Ms": 1000}), console=Console(file=io.StringIO()))
    assert [v.slo for v in breached.value.breached] == ["p50Ms"]
    assert "median latency (exact)" in str(breached.value)
    requests = summary_of(breached.value.run_dir)["requests"]
    assert requests["percentiles_exact"] is True and requests["min"] > 1000
    assert requests["percentiles"]["p50"] > 1000  # judged: the exact median
    assert requests["percentiles_locust"]["p50"] % 100 == 0  # beside it, Locust's 100 ms bucket


# Locust's own StatsEntry and loadkit's summary, in a subprocess: importing Locust monkey-patches
# the importing process with gevent, which the test process must not be.
SUMMARISE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from locust.stats import RequestStats, StatsEntry
from loadkit import entry_summary
samples = json.loads(sys.argv[2])
entry = StatsEntry(RequestStats(), "predict", "POST", use_response_times_cache=False)
for value in samples:
    entry.log(value, 0)
print(json.dumps(entry_summary(entry, 10.0, samples)))
"""


def summarised(samples: list[float]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", SUMMARISE, str(PROJECT_ROOT / "load"), json.dumps(samples)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize(("samples", "slo", "locust_p50", "locust_verdict", "exact_verdict"), [
    # Every request over 1000 ms: Locust's 100 ms bucket says 1000, which p50Ms 1000 would pass.
    ([1000.9, 1001.4, 1002.2, 1003.0, 1004.8], 1000, 1000, True, False),
    # Every request about 1060 ms: Locust rounds up to 1100, which p50Ms 1099 would fail.
    ([1055.2, 1058.7, 1060.1, 1061.9, 1064.3], 1099, 1100, False, True),
])
def test_the_gate_judges_exact_figures_in_both_directions(samples: list[float], slo: float, locust_p50: float,
                                                          locust_verdict: bool, exact_verdict: bool) -> None:
    requests = summarised(samples)
    assert requests["percentiles_exact"] is True
    assert requests["percentiles_locust"]["p50"] == locust_p50
    assert requests["percentiles"]["p50"] == sorted(samples)[2]  # the nearest-rank median
    summary = {"requests": {**requests, "error_rate": 0.0}}
    rounded = {"requests": {**requests, "percentiles": requests["percentiles_locust"], "percentiles_exact": False}}

    def median_verdict(measured: dict[str, Any]) -> Any:
        return next(v for v in judge(Slo.model_validate({"p50Ms": slo}), measured) if v.slo == "p50Ms")

    exact, locust = median_verdict(summary), median_verdict(rounded)
    assert (exact.ok, locust.ok) == (exact_verdict, locust_verdict)
    assert exact.description == "median latency (exact)"
    assert locust.description == "median latency (Locust's rounded)"
