"""The metric names a PromQL expression reads, and the queries of a Grafana dashboard, for tests that hold a
dashboard to what the server exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "infergate.json"

# Words PromQL reads as operators or modifiers, never as a metric name.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")  # label matchers (strings already gone)
_RANGE = re.compile(r"\[[^\[\]]*\]")  # range and subquery selectors: [5m], [$__rate_interval], [1h:1m]
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names ``expr`` selects, e.g. ``{"infergate_requests_total"}`` from
    ``sum by (route) (rate(infergate_requests_total{status=~"5.."}[$__rate_interval]))``. Function calls,
    label names, grouping clauses, keywords, durations, numbers and Grafana's ``$variables`` are left out."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS or name.lower() in ("inf", "nan"):
            continue
        names.add(name)
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, those inside collapsed rows too (rows themselves left out)."""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
