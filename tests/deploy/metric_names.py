"""Which metrics Reckon's processes export, read from the code, and which metrics a PromQL query names.

The exported names come from the source of the Reckon packages: every prometheus-client metric or
metric family constructed there (``Counter("reckon_reports", ...)``, ``Gauge(BUILD_INFO, ...)``,
``CounterMetricFamily("reckon_payments_deliveries", ...)``), whether it is registered at import or
by a function at start-up. ``registered_at_import`` is the cross-check: what prometheus-client's
default registry and the payment consumer's collector hold once the metric modules are imported.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tests.deploy.tools import ROOT

PACKAGES = ("contracts", "transport", "accounting", "workers", "payments", "observability")

# Constructor → the metric type it makes.
METRIC_TYPES = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
    "Info": "info",
    "Enum": "stateset",
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
    "GaugeHistogramMetricFamily": "gaugehistogram",
    "SummaryMetricFamily": "summary",
    "InfoMetricFamily": "info",
    "StateSetMetricFamily": "stateset",
}

# Series Prometheus itself writes for every target or rule, not the processes.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})


@dataclass(frozen=True)
class Metric:
    family: str
    """The family's name as prometheus-client exposes it in ``# TYPE`` (a counter without _total)."""
    type: str
    where: str

    def samples(self) -> set[str]:
        """The sample names of the text format for this family."""
        name = self.family
        match self.type:
            case "counter":
                return {f"{name}_total", f"{name}_created"}
            case "histogram":
                return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
            case "gaugehistogram":
                return {f"{name}_bucket", f"{name}_gcount", f"{name}_gsum"}
            case "summary":
                return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
            case "info":
                return {f"{name}_info"}
            case _:
                return {name}


def family_name(name: str, metric_type: str) -> str:
    """prometheus-client drops a counter's _total (and an info's _info) from the family name."""
    if metric_type == "counter":
        return name.removesuffix("_total")
    if metric_type == "info":
        return name.removesuffix("_info")
    return name


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` (or annotated) assignments."""
    strings: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    strings[target.id] = value.value
    return strings


def _constructor(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name if name in METRIC_TYPES else None


def _name_argument(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    for keyword in call.keywords:
        if keyword.arg == "name":
            return keyword.value
    return None


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def defined_metrics() -> tuple[list[Metric], list[str]]:
    """Every metric constructed in the Reckon packages, and what could not be read (to fail on)."""
    metrics: list[Metric] = []
    unreadable: list[str] = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if "prometheus_client" not in text:
            continue
        tree = ast.parse(text, filename=str(path))
        strings = _module_strings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or (constructor := _constructor(node)) is None:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if any(k.arg in ("namespace", "subsystem", "unit") for k in node.keywords):
                unreadable.append(f"{where}: namespace/subsystem/unit arguments (teach metric_names.py)")
                continue
            argument = _name_argument(node)
            name: str | None = None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                name = argument.value
            elif isinstance(argument, ast.Name):
                name = strings.get(argument.id)
            if name is None:
                unreadable.append(f"{where}: the name of this {constructor} is not a literal or a constant")
                continue
            metric_type = METRIC_TYPES[constructor]
            metrics.append(Metric(family_name(name, metric_type), metric_type, where))
    return metrics, unreadable


def exported_samples(metrics: list[Metric]) -> set[str]:
    return set().union(*(metric.samples() for metric in metrics))


def registered_at_import() -> set[tuple[str, str]]:
    """(family, type) of every reckon_* family in the default registry once each module that uses
    prometheus-client is imported, plus the payment consumer's collector."""
    from prometheus_client import REGISTRY

    for path in _sources():
        if "prometheus_client" in path.read_text(encoding="utf-8"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            importlib.import_module(module.removesuffix(".__init__"))
    families = list(REGISTRY.collect())

    from payments.consumer import PaymentConsumer
    from payments.process import PaymentMetrics

    families += list(PaymentMetrics(cast(PaymentConsumer, object())).collect())
    return {(family.name, family.type) for family in families if family.name.startswith("reckon_")}


# --- PromQL ---

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
RANGE = re.compile(r"\[[^\]]*\]")
MODIFIER = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
TOKEN = re.compile(r"\{[^}]*\}|(?<![\w.$§])([a-zA-Z_:][\w:]*)(\s*\()?(\s*\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!=|!~|=)\s*§(\d+)§")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN", "start", "end"}
)


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]
    """(label, operator, value) of each label matcher."""

    def matcher(self, label: str) -> tuple[str, str] | None:
        for name, operator, value in self.matchers:
            if name == label:
                return operator, value
        return None


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression (``rate(x{a="b"}[5m])`` → x with a="b").
    A selector without a metric name (``{job="x"}``) raises: this checker cannot tell what it reads."""
    strings: list[str] = []

    def keep(match: re.Match[str]) -> str:
        strings.append(match.group(0)[1:-1])
        return f"§{len(strings) - 1}§"

    text = STRING.sub(keep, expr)
    text = RANGE.sub(" ", text)
    text = MODIFIER.sub(" ", text)
    found: list[Selector] = []
    for match in TOKEN.finditer(text):
        name, call, braces = match.group(1), match.group(2), match.group(3)
        if name is None:
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if call is not None or name in KEYWORDS:
            continue
        matchers = tuple(
            (label, operator, strings[int(index)]) for label, operator, index in MATCHER.findall(braces or "")
        )
        found.append(Selector(name, matchers))
    return found


def grafana_selectors(query: Any) -> list[Selector]:
    """The selectors of a Grafana Prometheus query: a panel's expr, or a variable's
    ``label_values(metric, label)`` / ``query_result(expr)``."""
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    if (values := re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text)) is not None:
        text = values.group(1)
    elif (result := re.fullmatch(r"\s*query_result\((.*)\)\s*", text)) is not None:
        text = result.group(1)
    outside_strings = STRING.sub('""', text)
    if GRAFANA_VARIABLE.search(RANGE.sub(" ", outside_strings)):
        raise ValueError(f"a Grafana variable outside a label value or a range in {text!r}")
    return selectors(text)
