"""What users write is printed as written: error messages, table cells, titles and progress lines
quote file contents, names, paths and command output, and Rich must never read them as markup
("[/]" would crash the printer, "[red]abc" would lose its brackets)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from invoke import Context
from rich.console import Console

import tasks
from inferbox import PROJECT_ROOT, cli
from inferbox.bootstrap.phases import build_plan
from inferbox.bootstrap.toolinstall import ToolOutcome, outcomes_table
from inferbox.config import Settings
from inferbox.events import Event
from inferbox.load.summary import compare_table
from inferbox.tenants.spec import load_tenants
from inferbox.ui import FitTable, ProgressView

DNS1123_PATTERN = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What cli's error console prints (wide: each message on one line)."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=out, width=400, soft_wrap=True))
    return out


def tenant_file(folder: Path, name: str, cpu: str) -> Path:
    """The shipped tenant-a, renamed, with ``quotas.cpu`` set to ``cpu``."""
    text = (PROJECT_ROOT / "tenants" / "tenant-a.yaml").read_text()
    assert 'cpu: "4"' in text and "name: tenant-a\n" in text
    path = folder / f"{name}.yaml"
    path.write_text(text.replace('cpu: "4"', f"cpu: {cpu!r}".replace("'", '"'), 1)
                    .replace("name: tenant-a\n", f"name: {name}\n", 1))
    return path


def error_output(directory: Path, stderr: io.StringIO) -> str:
    """The tasks' error path: a ConfigError from loading the tenant files, through exit_on_error."""
    with pytest.raises(cli.Exit) as exited, cli.exit_on_error():
        load_tenants(directory)
    assert exited.value.code == 1
    return stderr.getvalue()


@pytest.mark.parametrize("value", ["[/]", "[red]abc", "[bold]x[/bold]"])
def test_a_quota_that_looks_like_markup_is_reported_as_written(tmp_path: Path, stderr: io.StringIO,
                                                              value: str) -> None:
    tenant_file(tmp_path, "tenant-x", value)
    text = error_output(tmp_path, stderr)
    line = next(line for line in text.splitlines() if "tenant-x.yaml" in line)
    assert "quotas.cpu" in line
    assert repr(value) in line, text  # the literal value, brackets and all
    assert text.startswith("error: ")
    assert "Traceback" not in text and "MarkupError" not in text


def test_every_file_is_reported_when_several_hold_markup(tmp_path: Path, stderr: io.StringIO) -> None:
    tenant_file(tmp_path, "tenant-x", "[/]")
    tenant_file(tmp_path, "tenant-y", "[red]abc")
    text = error_output(tmp_path, stderr)
    assert "tenant-x.yaml: quotas.cpu: '[/]'" in text
    assert "tenant-y.yaml: quotas.cpu: '[red]abc'" in text


def test_a_pattern_in_an_error_appears_whole(tmp_path: Path, stderr: io.StringIO) -> None:
    path = tenant_file(tmp_path, "tenant-x", "4")
    path.write_text(path.read_text().replace("name: tenant-x\n", "name: Tenant_X\n"))
    text = error_output(tmp_path, stderr)
    assert "tenant-x.yaml: name:" in text
    assert DNS1123_PATTERN in text


def test_key_and_token_tasks_print_paths_and_names_as_written(tmp_path: Path, stderr: io.StringIO,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A project folder and a subject with brackets, through the keys and token tasks."""
    root = tmp_path / "project [red]x"
    (root / "models").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "versions.toml", root / "versions.toml")
    shutil.copy(PROJECT_ROOT / "models" / "catalog.yaml", root / "models" / "catalog.yaml")
    shutil.copytree(PROJECT_ROOT / "tenants", root / "tenants")
    monkeypatch.setattr(cli, "PROJECT_ROOT", root)
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=400, soft_wrap=True))
    tasks.keys(Context())
    assert f"created a signing key in {root / '.inferbox' / 'keys'} (mode 0600" in out.getvalue()
    tasks.token(Context(), tenant="tenant-a", subject="[red]ci")
    assert stderr.getvalue().startswith("warning: '[red]ci' is not an allowed caller of tenant-a ")
    assert capsys.readouterr().out.count(".") == 2  # stdout: the token only (a JWT)


@pytest.mark.parametrize("width", [400, 30], ids=["table", "list"])
def test_fit_table_prints_title_caption_headers_and_cells_as_written(width: int) -> None:
    table = FitTable("tenant-delete [/]", ("object [x]", "detail"), caption="caption [red]c")
    table.add_row("[bold]n", "[/] and [red]abc")
    out = io.StringIO()
    Console(file=out, width=width).print(table)
    text = out.getvalue()
    for written in ("tenant-delete [/]", "caption [red]c", "[bold]n", "[/] and [red]abc"):
        assert written in text, text
    if width == 30:  # too narrow for the table: one block per row
        assert "- [bold]n" in text and "detail: [/] and [red]abc" in text, text
    else:
        assert "object [x]" in text, text


def test_tables_of_user_values_print_them_as_written() -> None:
    tools = outcomes_table([ToolOutcome("helm", "v3", "downloaded", Path("/opt/[red]bin/helm"), "note [/]")])
    compared = compare_table([{"metric": "p95 [ms]", "before": 2.0, "now": 1.0, "change": -1.0, "relative": -0.5,
                               "direction": "better"}], "run [/]")
    out = io.StringIO()
    console = Console(file=out, width=400)
    console.print(tools)
    console.print(compared)
    text = out.getvalue()
    for written in ("/opt/[red]bin/helm", "note [/]", "p95 [ms]", "compared with run [/]", "-1 (-50.0%) better"):
        assert written in text, text


def test_a_progress_step_from_command_output_is_shown_as_written(make_settings: Callable[..., Settings]) -> None:
    plan = build_plan(make_settings(gpu="off"), gpu=False)
    out = io.StringIO()
    console = Console(file=out, width=400)
    view = ProgressView(console, plan)
    phase = plan.phases[0].name
    view(Event("step", phase=phase, message="helm: closing tag [/] and [red]abc"))
    assert "helm: closing tag [/] and [red]abc" in out.getvalue()  # the line-per-event display
    console.print(view._table())  # what the live display on a terminal shows
    assert out.getvalue().count("helm: closing tag [/] and [red]abc") == 2
