"""Task sections of a report (retrieval, classification, ...), plugged in by whoever knows the task.

The core report knows hardware, not tasks: a section is registered by the code that computes its metrics
(the reference models in `examples/` register theirs) and `build_report(..., sections={key: data})` carries
its data into the report under `key`, adds the cost of one query when the task's query costs more than one
inference (a similarity search over a gallery), and the terminal and HTML renderers draw it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spikedeploy.errors import SpikeDeployError


@dataclass(frozen=True)
class TaskSection:
    key: str  # the report field the section's data lives in
    title: str
    # host MACs one query adds beyond one inference, and what they are; (0, "") for none
    query_host_macs: Callable[[dict], tuple[int, str]] | None = None
    terminal: Callable[[dict, object], None] | None = None  # (report, rich console)
    html: Callable[[dict], tuple[str, list[tuple[str, object]]]] | None = None  # report -> (fragment, figures)


_SECTIONS: dict[str, TaskSection] = {}


def register_section(section: TaskSection) -> TaskSection:
    """Make `section.key` accepted by build_report and drawn by the renderers (idempotent per key)."""
    _SECTIONS[section.key] = section
    return section


def get_section(key: str) -> TaskSection:
    if key not in _SECTIONS:
        known = ", ".join(sorted(_SECTIONS)) or "none"
        raise SpikeDeployError(f"report section '{key}' is not registered (registered: {known}); register it with "
                               "spikedeploy.report.sections.register_section before building the report")
    return _SECTIONS[key]


def present(report: dict) -> list[TaskSection]:
    """The registered sections that `report` holds data for, in registration order."""
    return [s for k, s in _SECTIONS.items() if report.get(k) is not None]
