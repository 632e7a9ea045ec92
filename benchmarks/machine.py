"""The machine a benchmark ran on, printed with every run: on a shared machine the load says how
far its figures can be trusted, and only ratios within one run compare."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """Cores, CPU model, its avx and amx flags, and the load average right now."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    models = re.findall(r"^model name\s*:\s*(.+)$", info, re.M)
    flag_lines = " ".join(re.findall(r"^flags.*$", info, re.M))
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": models[0] if models else "unknown",
        "flags": sorted(set(re.findall(r"\b((?:avx|amx)\w*)", flag_lines))),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe_machine(facts: dict[str, Any]) -> str:
    load = " ".join(f"{value:.2f}" for value in facts["load_average"])
    return (
        f"machine: {facts['cpu']}; {facts['cores']} cores ({facts['usable_cores']} usable); "
        f"flags: {' '.join(facts['flags']) or '-'}; load average {load}; {facts['date']}"
    )
