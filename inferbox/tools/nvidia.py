"""nvidia-smi, wrapped once: the doctor asks it which GPUs the host has."""

from __future__ import annotations

from dataclasses import dataclass

from inferbox.errors import CommandError, CommandTimeout
from inferbox.runner import Command, Runner

QUERY = ("--query-gpu=name,memory.total", "--format=csv,noheader")


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int | None = None


@dataclass(frozen=True)
class GpuReport:
    """What nvidia-smi said. ``found`` is False when the program is not installed at all,
    which (unlike a driver error) means "no NVIDIA driver here" rather than "broken driver"."""

    found: bool
    gpus: tuple[Gpu, ...] = ()
    error: str = ""


class NvidiaSmi:
    def __init__(self, runner: Runner, binary: str = "nvidia-smi") -> None:
        self.runner = runner
        self.binary = binary

    def query(self) -> GpuReport:
        cmd = Command((self.binary, *QUERY), timeout=30, mutating=False, retry_transient=False)
        try:
            result = self.runner.run(cmd, check=False)
        except CommandTimeout as exc:
            # A hung nvidia-smi is a classic symptom of a wedged driver: installed, but unusable.
            return GpuReport(found=True, error=str(exc))
        except CommandError as exc:
            return GpuReport(found=False, error=str(exc))
        if not result.ok:
            # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
            lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
            return GpuReport(found=True, error=lines[-1] if lines else f"exit code {result.exit_code}")
        return GpuReport(found=True, gpus=parse_gpus(result.stdout))


def parse_gpus(csv_text: str) -> tuple[Gpu, ...]:
    """Parse ``name, memory.total`` lines such as ``NVIDIA H100 80GB HBM3, 81559 MiB``."""
    gpus = []
    for line in csv_text.splitlines():
        if not line.strip():
            continue
        # The memory column is last and never contains a comma; a product name might.
        name, _, memory = line.rpartition(",")
        if not name:
            name, memory = memory, ""
        gpus.append(Gpu(name=name.strip(), memory_mib=_mib(memory)))
    return tuple(gpus)


def _mib(text: str) -> int | None:
    number = text.strip().removesuffix("MiB").strip()
    return int(number) if number.isdigit() else None
