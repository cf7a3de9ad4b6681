"""The ``[observability]`` pin of versions.toml (typed in inferbox.config, like every pin)."""

from __future__ import annotations

from pathlib import Path

from inferbox.config import ObservabilityPin, load_versions

PROMETHEUS_MODULE = "github.com/prometheus/prometheus"

__all__ = ["PROMETHEUS_MODULE", "ObservabilityPin", "load_pin"]


def load_pin(versions_file: Path) -> ObservabilityPin:
    """The validated ``[observability]`` table of ``versions_file``."""
    return load_versions(versions_file).observability
