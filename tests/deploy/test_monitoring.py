"""deploy/components/monitoring: the PrometheusRule, the PodMonitor and the Grafana dashboard, as the
overlays render them.

- The alerting rules are the rendered PrometheusRule's spec.groups, written to a rule file, that
  `promtool check rules` accepts and `promtool test rules` (tests/deploy/monitoring/*.test.yaml)
  passes: the rules tested are the rules deployed. promtool comes from Debian's prometheus package
  (.ci/run installs it); without it these tests skip, except under CI, where they fail.
- Every metric a rule or a dashboard query reads is one the processes export (read from the code,
  tests/deploy/metric_names.py), or Prometheus' own `up`.
- The PodMonitor selects the labels and the port name the rendered Deployments really have.
- The custom resources are validated against tests/deploy/schemas/ (kubernetes-validate has none).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import (
    PROMETHEUS_SERIES,
    Selector,
    defined_metrics,
    exported_samples,
    grafana_selectors,
    registered_at_import,
    selectors,
)
from tests.deploy.tools import (
    DEPLOY,
    ROOT,
    Manifest,
    containers,
    env_value,
    is_custom_resource,
    kustomize,
    load_all,
    name_of,
    named,
    of_kind,
    overlay,
    pod_spec,
    pod_template,
    run,
    run_ok,
    system_tool,
    tool,
)

COMPONENT = DEPLOY / "components" / "monitoring"
DASHBOARD = COMPONENT / "dashboards" / "monthly-close.json"
RULE_TESTS = Path(__file__).parent / "monitoring"
SCHEMAS = Path(__file__).parent / "schemas"
RULES_FILE = "reckon-rules.yaml"  # what the rule tests' rule_files name
PROMTOOL_INSTALL = (
    "it comes with Debian's prometheus package: `apt-get install --no-install-recommends prometheus` "
    "(.ci/run installs it, without starting the server)"
)
SEVERITIES = {"critical", "warning", "info"}
MONITORED = ("prod", "dev+monitoring")
# Grafana's own variables a query may use besides the dashboard's.
GRAFANA_BUILTINS = {"__range", "__rate_interval", "__interval", "__range_s", "__interval_ms"}
REMOVED_METRICS = (
    "reckon_invoices_published",
)  # duplicated reckon_events_published_total{type="InvoiceIssued"}


def promtool() -> Path:
    return system_tool("promtool", PROMTOOL_INSTALL)


def rendered(name: str) -> list[Manifest]:
    """An overlay's manifests; "dev+monitoring" is dev with the component added as the README says."""
    return dev_with_monitoring() if name == "dev+monitoring" else overlay(name).manifests


@functools.cache
def dev_with_monitoring() -> list[Manifest]:
    """deploy/ copied, the dev overlay given `- ../../components/monitoring`, rendered once."""
    with tempfile.TemporaryDirectory() as directory:
        copy = Path(directory) / "deploy"
        shutil.copytree(DEPLOY, copy)
        kustomization = copy / "overlays" / "dev" / "kustomization.yaml"
        text = kustomization.read_text(encoding="utf-8")
        line = "  - ../../components/monitoring\n"
        assert "components:\n" in text and line not in text
        kustomization.write_text(text.replace("components:\n", "components:\n" + line, 1), encoding="utf-8")
        return load_all(kustomize(copy / "overlays" / "dev"))


def the(manifests: list[Manifest], kind: str) -> Manifest:
    [found] = of_kind(manifests, kind)
    return found


def rules(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [rule for group in the(manifests, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def alerts(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules(manifests) if "alert" in rule}


def write_rules(manifests: list[Manifest], directory: Path) -> Path:
    """The rendered PrometheusRule's groups as a Prometheus rule file."""
    path = directory / RULES_FILE
    groups = the(manifests, "PrometheusRule")["spec"]["groups"]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.test.yaml"))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # a collapsed row holds its panels
    return found


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, query) of every panel target and every query variable."""
    queries: list[tuple[str, Any]] = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"variable {variable['name']}", variable["query"])
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def exported() -> set[str]:
    metrics, unreadable = defined_metrics()
    assert not unreadable, unreadable
    return exported_samples(metrics) | PROMETHEUS_SERIES


def scraped_deployments(manifests: list[Manifest]) -> list[Manifest]:
    """The Deployments that serve /metrics: their containers set RECKON_HTTP_PORT."""
    return [
        deployment
        for deployment in of_kind(manifests, "Deployment")
        if any(env_value(c, "RECKON_HTTP_PORT") for c in containers(pod_spec(deployment), init=False))
    ]


# --- promtool ---


@pytest.mark.parametrize("name", MONITORED)
def test_promtool_accepts_the_deployed_rules(name: str, tmp_path: Path) -> None:
    path = write_rules(rendered(name), tmp_path)

    out = run_ok([promtool(), "check", "rules", path])

    assert f"SUCCESS: {len(rules(rendered(name)))} rules found" in out, out


def test_promtool_unit_tests_of_the_deployed_rules_pass(tmp_path: Path) -> None:
    """The cases of tests/deploy/monitoring, run on the rules the prod overlay renders."""
    write_rules(rendered("prod"), tmp_path)
    files = rule_test_files()
    assert files
    for file in files:
        shutil.copy(file, tmp_path / file.name)

    completed = run([promtool(), "test", "rules", *(file.name for file in files)], cwd=tmp_path)

    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report
    assert report.count("SUCCESS") == len(files), report


def test_every_alert_has_promtool_cases_that_fire_it_and_keep_it_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for file in rule_test_files():
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
        assert content["rule_files"] == [RULES_FILE], file.name
        for case in content["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    deployed = set(alerts(rendered("prod")))
    assert fired == deployed, f"alerts never shown firing: {deployed - fired}; unknown: {fired - deployed}"
    assert quiet == deployed, f"alerts never shown quiet: {deployed - quiet}"


def test_without_promtool_a_developer_skips_and_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="prometheus package"):
        promtool()
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="failing rather than skipping"):
            promtool()


# --- the rules ---


@pytest.mark.parametrize("name", MONITORED)
def test_every_rule_reads_metrics_the_processes_export(name: str) -> None:
    names = exported()
    for rule in rules(rendered(name)):
        for selector in selectors(rule["expr"]):
            assert selector.metric in names, (
                f"{rule.get('alert') or rule.get('record')} reads {selector.metric}, which no process exports"
            )


def test_the_alerts_say_how_bad_what_and_where_to_look() -> None:
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (.+)$", runbook, re.MULTILINE))
    deployed = alerts(rendered("prod"))
    assert set(deployed) >= {
        "ReckonMonthlyCloseMissing",
        "ReckonReportAborted",
        "ReckonOutboxStuck",
        "ReckonDeadLetters",
        "ReckonTaskFailing",
        "ReckonTargetDown",
    }
    assert len(deployed) == len([rule for rule in rules(rendered("prod")) if "alert" in rule]), "names repeat"
    for alert, rule in deployed.items():
        assert rule["labels"]["severity"] in SEVERITIES, alert
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), alert
        sections = re.findall(r'"([^"]+)"', rule["annotations"]["runbook"])
        assert sections, alert
        for section in sections:
            assert section in headings, f"{alert}: deploy/README.md has no section {section!r}"
        assert alert in runbook, f"deploy/README.md, Monitoring, must explain {alert}"


def test_the_close_is_due_six_hours_after_the_cronjobs_schedule() -> None:
    """ReckonMonthlyCloseMissing's 06:30 (23400 s into the 1st) is the CronJob's 00:30 + 6 h,
    which is also when the CronJob's startingDeadlineSeconds gives up on a missed run."""
    manifests = rendered("prod")
    cronjob = named(manifests, "CronJob", "reckon-close-period")
    minute, hour, day = cronjob["spec"]["schedule"].split()[:3]
    assert day == "1"
    expr = alerts(manifests)["ReckonMonthlyCloseMissing"]["expr"]
    [due] = re.findall(r">= (\d+)\)", expr)
    scheduled = int(hour) * 3600 + int(minute) * 60
    assert int(due) == scheduled + 6 * 3600
    assert cronjob["spec"]["startingDeadlineSeconds"] == 6 * 3600


@pytest.mark.parametrize("name", MONITORED)
def test_the_rules_select_the_jobs_the_podmonitor_names(name: str) -> None:
    """`up{job=...}`: the PodMonitor names each target's job after the pod's jobLabel."""
    manifests = rendered(name)
    monitor = the(manifests, "PodMonitor")
    label = monitor["spec"]["jobLabel"]
    jobs = {pod_template(d)["metadata"]["labels"][label] for d in scraped_deployments(manifests)}
    assert "reckon-coordinator" in jobs
    for rule in rules(manifests):
        for selector in selectors(rule["expr"]):
            matcher = selector.matcher("job")
            if matcher is None:
                continue
            operator, value = matcher
            if operator == "=":
                assert value in jobs, f"{rule['alert']}: no job {value!r}"
            elif operator == "=~":
                assert all(re.fullmatch(value, job) for job in jobs), (
                    f"{rule['alert']}: {value!r} misses a job"
                )
            else:
                pytest.fail(f"{rule['alert']}: job {operator} is not checked here")


# --- the dashboard ---


def test_the_dashboard_is_grafana_json() -> None:
    board = dashboard()

    assert board["uid"] == "reckon-monthly-close" and board["title"]
    assert isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    variables = {variable["name"] for variable in board["templating"]["list"]}
    [source] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{source['name']}}}"}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]
            for variable in re.findall(r"\$\{?(\w+)\}?", target["expr"]):
                assert variable in variables | GRAFANA_BUILTINS, (
                    f"{panel['title']}: ${variable} is not defined"
                )


def test_every_dashboard_query_reads_a_metric_the_processes_export_in_the_chosen_namespace() -> None:
    names = exported()
    board = dashboard()
    read: set[str] = set()
    for where, query in dashboard_queries(board):
        found: list[Selector] = grafana_selectors(query)
        assert found, f"{where}: reads no metric"
        for selector in found:
            assert selector.metric in names, f"{where} reads {selector.metric}, which no process exports"
            if where.startswith("panel"):
                assert selector.matcher("namespace") == ("=", "$namespace"), (
                    f"{where}: not filtered by namespace"
                )
            read.add(selector.metric)
    # The monthly close at a glance: the report, its abort reasons, the publishing, the backlog.
    assert {
        "reckon_report_last_completed_timestamp_seconds",
        "reckon_reports_awaiting_approval",
        "reckon_reports_total",
        "reckon_report_abort_reasons_total",
        "reckon_events_published_total",
        "reckon_outbox_oldest_pending_age_seconds",
        "reckon_relay_lag_seconds_bucket",
        "reckon_dead_letters",
        "reckon_task_failures",
    } <= read


def test_no_rule_or_query_reads_a_removed_metric() -> None:
    texts = [
        DASHBOARD.read_text(encoding="utf-8"),
        (COMPONENT / "prometheusrule.yaml").read_text(encoding="utf-8"),
    ]
    for removed in REMOVED_METRICS:
        assert not any(removed in text for text in texts), removed


def test_the_metric_names_read_from_the_code_cover_what_the_processes_register() -> None:
    """The scan of the sources misses nothing the default registry and the payment collector hold."""
    metrics, unreadable = defined_metrics()
    assert not unreadable, unreadable
    scanned = {(metric.family, metric.type) for metric in metrics}
    assert registered_at_import() <= scanned
    assert ("reckon_build_info", "gauge") in scanned, "every process exports reckon_build_info"


@pytest.mark.parametrize("name", MONITORED)
def test_the_dashboard_is_a_config_map_for_the_grafana_sidecar(name: str) -> None:
    config_map = named(rendered(name), "ConfigMap", "reckon-dashboards")

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    content = config_map["data"]["monthly-close.json"]
    assert content == DASHBOARD.read_text(encoding="utf-8")
    # `kubectl apply` keeps the object in an annotation, limited to 256 KiB.
    assert len(content.encode()) < 200_000


# --- the PodMonitor ---


@pytest.mark.parametrize("name", MONITORED)
def test_the_podmonitor_scrapes_every_process_on_its_metrics_port(name: str) -> None:
    manifests = rendered(name)
    monitor = the(manifests, "PodMonitor")
    spec = monitor["spec"]
    [endpoint] = spec["podMetricsEndpoints"]
    selector: dict[str, str] = spec["selector"]["matchLabels"]
    assert set(spec["selector"]) == {"matchLabels"}

    served = scraped_deployments(manifests)
    assert {name_of(d) for d in served} >= {"reckon-coordinator", "reckon-compute", "reckon-storage"}
    for deployment in served:
        template = pod_template(deployment)
        labels = template["metadata"]["labels"]
        where = name_of(deployment)
        assert selector.items() <= labels.items(), f"the PodMonitor does not select {where}"
        assert spec["jobLabel"] in labels, where
        [container] = containers(pod_spec(deployment), init=False)
        ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
        assert endpoint["port"] in ports, f"{where} has no port named {endpoint['port']!r}"
        assert ports[endpoint["port"]] == int(env_value(container, "RECKON_HTTP_PORT") or 0), where
        assert endpoint["path"] == template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    # Whatever else it selects serves no such port (the CronJob's pods): no target, no false alarm.
    for workload in of_kind(manifests, "CronJob") + of_kind(manifests, "StatefulSet"):
        labels = pod_template(workload)["metadata"].get("labels", {})
        if selector.items() <= labels.items():
            names = {p.get("name") for c in containers(pod_spec(workload)) for p in c.get("ports", [])}
            assert endpoint["port"] not in names, name_of(workload)


def test_dev_can_include_the_component_as_the_readme_says() -> None:
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "- ../../components/monitoring" in runbook
    dev, prod = dev_with_monitoring(), overlay("prod").manifests

    assert the(dev, "PrometheusRule")["spec"] == the(prod, "PrometheusRule")["spec"]
    assert {m["metadata"]["namespace"] for m in dev if m["kind"] != "Namespace"} == {"reckon-dev"}
    assert not any(is_custom_resource(m) for m in overlay("dev").manifests), "dev leaves it out by default"


@pytest.mark.parametrize("name", MONITORED)
def test_the_custom_resources_match_the_operators_schemas(name: str, tmp_path: Path) -> None:
    custom = [m for m in rendered(name) if is_custom_resource(m)]
    assert {m["kind"] for m in custom} == {"PodMonitor", "PrometheusRule"}
    for manifest in custom:
        group_version = manifest["apiVersion"].replace("/", ".")
        schema = SCHEMAS / f"{manifest['kind'].lower()}.{group_version}.json"
        instance = tmp_path / f"{manifest['kind']}.json"
        instance.write_text(json.dumps(manifest), encoding="utf-8")
        run_ok([tool("check-jsonschema"), "--schemafile", schema, instance])


def test_the_repository_readme_says_the_tests_need_promtool() -> None:
    assert "promtool" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "apt-get install" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
