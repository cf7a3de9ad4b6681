"""load/profiles.yaml: every shipped profile validates; bad ones fail naming file and field; every run is
bounded; load never goes to an address that is not loopback unless the user owns it."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.load.app import run_loadtest
from inferbox.load.profiles import (
    MAX_DURATION_S,
    default_profiles_path,
    load_profiles,
    parse_duration,
    reference_problems,
)
from inferbox.load.target import LoadTargetRefused, check_host, resolves_to_loopback
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.tenants.spec import load_tenants


@pytest.fixture
def raw(root: Path) -> dict[str, Any]:
    return yaml.safe_load(default_profiles_path(root).read_text())


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_profiles(path)
    assert str(path) in str(caught.value), "the error names the file"
    return dict(caught.value.problems)


# -- the shipped profiles ------------------------------------------------------------------------
def test_every_shipped_profile_validates_and_is_bounded(root: Path) -> None:
    profiles = load_profiles(default_profiles_path(root), root=root).profiles
    assert {"smoke", "steady", "spike", "soak"} <= set(profiles)
    for name, profile in profiles.items():
        assert profile.name == name
        assert 0 < profile.duration <= MAX_DURATION_S and profile.max_requests > 0
        assert profile.slo.model_dump(exclude_none=True), f"{name} sets no SLO"
    spike = profiles["spike"]
    assert spike.steps is not None and spike.peak_users == max(s.users for s in spike.steps)
    assert sum(s.duration for s in spike.steps) == spike.duration


def test_shipped_profiles_name_real_models_and_tenants(root: Path) -> None:
    profiles = load_profiles(default_profiles_path(root), root=root)
    catalog = load_catalog(default_catalog_path(root))
    tenants = [t.name for t in load_tenants(root / "tenants", root=root)]
    served = {name: list(model.protocols) for name, model in catalog.models.items()}
    assert reference_problems(profiles, served, tenants) == []


def test_llm_profiles_carry_llm_slos(root: Path) -> None:
    profiles = load_profiles(default_profiles_path(root)).profiles
    chat = [p for p in profiles.values() if "openai" in p.protocols]
    assert chat, "a streaming chat profile ships"
    assert all(p.slo.ttft_p95_ms and p.slo.min_tokens_per_s for p in chat)


# -- bad profiles: file and field named ----------------------------------------------------------
def test_unknown_key_is_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["smoke"]["usres"] = 3
    found = problems(write(tmp_path, raw))
    assert "unknown key" in found["profiles.smoke.usres"]


def test_bad_values_are_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    smoke = raw["profiles"]["smoke"]
    smoke["users"] = -1
    smoke["slo"]["maxErrorRate"] = 5
    smoke["protocols"] = {"grpc": 1}
    smoke["waitTime"] = {"min": 2, "max": 1}
    found = problems(write(tmp_path, raw))
    assert found["profiles.smoke.users"] == "Input should be greater than 0"
    assert found["profiles.smoke.slo.maxErrorRate"] == "Input should be less than or equal to 1"
    assert found["profiles.smoke.protocols.grpc.[key]"] == "Input should be 'v1', 'v2' or 'openai'"
    assert "min (2.0) exceeds max (1.0)" in found["profiles.smoke.waitTime"]


def test_llm_thresholds_need_the_openai_protocol(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["smoke"]["slo"]["ttftP95Ms"] = 500
    found = problems(write(tmp_path, raw))
    assert "LLM thresholds need the openai protocol" in found["profiles.smoke"]


def test_step_profiles_must_add_up(tmp_path: Path, raw: dict[str, Any]) -> None:
    spike = raw["profiles"]["spike"]
    spike["duration"] = "1m"
    spike["users"] = 5
    found = problems(write(tmp_path, raw))
    message = found["profiles.spike"]
    assert "users: not with steps" in message


def test_step_duration_mismatch_is_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["spike"]["duration"] = "1m"
    found = problems(write(tmp_path, raw))
    assert "duration (1m) must equal the steps' total (45s)" in found["profiles.spike"]


@pytest.mark.parametrize(("slo", "field", "message"), [
    ({"p50Ms": 300, "p95Ms": 200}, "p95Ms", "p95Ms (200) is below p50Ms (300)"),
    ({"p95Ms": 500, "p99Ms": 400}, "p99Ms", "p99Ms (400) is below p95Ms (500)"),
    ({"p50Ms": 300, "p99Ms": 250}, "p99Ms", "p99Ms (250) is below p50Ms (300)"),  # no p95 between them
    ({"p50Ms": 100, "p95Ms": 400, "p99Ms": 300}, "p99Ms", "p99Ms (300) is below p95Ms (400)"),
], ids=["p95<p50", "p99<p95", "p99<p50", "p99<p95-of-three"])
def test_percentile_slos_must_not_decrease(tmp_path: Path, raw: dict[str, Any], slo: dict[str, float], field: str,
                                           message: str) -> None:
    """A p95 threshold below the p50 one cannot be met as written: refused, naming file and field."""
    smoke = raw["profiles"]["smoke"]["slo"]
    for key in ("p50Ms", "p95Ms", "p99Ms"):
        smoke.pop(key, None)
    smoke.update(slo)
    found = problems(write(tmp_path, raw))
    assert list(found) == [f"profiles.smoke.slo.{field}"]
    assert found[f"profiles.smoke.slo.{field}"].startswith(message)
    assert "p50Ms <= p95Ms <= p99Ms" in found[f"profiles.smoke.slo.{field}"]


def test_equal_or_increasing_percentile_slos_are_accepted(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["smoke"]["slo"].update({"p50Ms": 250, "p95Ms": 250, "p99Ms": 500})
    assert load_profiles(write(tmp_path, raw)).profiles["smoke"].slo.p95_ms == 250


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("schema: 1\nprofiles: {smoke: [\n")
    assert "<syntax>" in problems(path)
    assert problems(tmp_path / "absent.yaml") == {"<file>": "not found"}


def test_unknown_profile_names_the_file_and_the_known_ones(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as caught:
        run_loadtest(make_settings(), "sklearn-iris", None, "smoky", console=Console(file=io.StringIO()))
    assert "load/profiles.yaml: profiles: no profile 'smoky' (known: chat-smoke, chat-steady, smoke, soak," \
           in str(caught.value)


def test_a_model_must_serve_the_profiles_protocols(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as caught:
        run_loadtest(make_settings(), "qwen-small", None, "smoke", console=Console(file=io.StringIO()))
    assert "load/profiles.yaml: profiles.smoke.protocols: qwen-small does not serve v1" in str(caught.value)


# -- unbounded runs are refused ------------------------------------------------------------------
@pytest.mark.parametrize("bound", ["duration", "maxRequests"])
def test_a_profile_without_a_bound_is_refused(tmp_path: Path, raw: dict[str, Any], bound: str) -> None:
    del raw["profiles"]["soak"][bound]
    found = problems(write(tmp_path, raw))
    assert found[f"profiles.soak.{bound}"] == ("required: every profile is bounded in time (duration) "
                                               "and in requests (maxRequests)")


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("duration", "forever", "is not a duration like 90s, 10m, 1h30m"),
    ("duration", "25h", "a run lasts between 1 s and 24 h"),
    ("duration", 0, "a run lasts between 1 s and 24 h"),
    ("maxRequests", 0, "greater than 0"),
    ("maxRequests", None, "valid integer"),
])
def test_unbounded_or_absurd_bounds_are_refused(tmp_path: Path, raw: dict[str, Any], field: str, value: Any,
                                                expected: str) -> None:
    raw["profiles"]["smoke"][field] = value
    found = problems(write(tmp_path, raw))
    assert expected in found[f"profiles.smoke.{field}"]


def test_durations_parse() -> None:
    assert [parse_duration(v) for v in ("90s", "10m", "1h30m", "2h", 45)] == [90, 600, 5400, 7200, 45]
    with pytest.raises(ValueError, match="whole seconds"):
        parse_duration(1.5)
    for bad in (float("inf"), float("nan"), "\uff11\uff10s"):  # .inf, .nan, fullwidth digits
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_the_file_is_not_changed_by_loading(root: Path) -> None:
    before = default_profiles_path(root).read_text()
    copy.deepcopy(load_profiles(default_profiles_path(root)))
    assert default_profiles_path(root).read_text() == before


# -- where load may go ---------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9000/", "https://[::1]:8443",
                                 "http://127.10.0.3"])
def test_loopback_hosts_are_accepted(url: str) -> None:
    assert check_host(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.1.2.3:8080", "http://192.0.2.10", "https://[2001:db8::1]:443",
                                 "http://0.0.0.0:8080", "http://example.invalid"])
def test_non_loopback_hosts_are_refused(url: str) -> None:
    with pytest.raises(LoadTargetRefused, match=r"is not a loopback address.*--i-own-this-host"):
        check_host(url)


def test_a_host_the_user_owns_needs_saying_so() -> None:
    assert check_host("http://10.1.2.3:8080", i_own_this_host=True) == "http://10.1.2.3:8080"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:8080", "http://127.0.0.1/v1/models",
                                 "http://user:pw@127.0.0.1"])
def test_malformed_hosts_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_host(url)
    assert caught.value.problems[0][0] == "host"


def test_localhost_is_resolved_not_trusted() -> None:
    assert resolves_to_loopback("localhost")
    assert not resolves_to_loopback("no-such-host.invalid")


def test_run_loadtest_refuses_a_foreign_host_before_sending_anything(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with pytest.raises(LoadTargetRefused, match=re.escape("refusing to send load to http://192.0.2.10:8080")):
        run_loadtest(settings, "sklearn-iris", None, "smoke", host="http://192.0.2.10:8080",
                     console=Console(file=io.StringIO()))
    assert not (settings.state_dir / "loadtests").exists(), "no run was started"
