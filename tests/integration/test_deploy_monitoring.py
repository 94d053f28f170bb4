"""The monitoring in ``deploy/``: the alert rules pass promtool's check and their unit
tests, the dashboard's queries are valid PromQL on the chosen jobs, and every metric the
rules, their tests and the dashboard name is one a real running job exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT, require
from tests.support.metrics import Scrape, parse, scrape_of_a_running_job

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "backfill.json"
METRIC_NAME = re.compile(r"\bbsky_backfill_\w+")
_SUFFIX = re.compile(r"_(total|bucket|sum|count)$")
# What Grafana puts in place of its variables, for promtool to parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job_id": ".*"}


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool (sh tests/system-deps.sh)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scrape, str]:
    text = scrape_of_a_running_job(tmp_path_factory.mktemp("scraped") / "job").last
    return parse(text), text


def run(promtool: str, *args: str | Path) -> None:
    done = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [panel for panel in panels if panel["type"] != "row"]


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    run(promtool, "check", "rules", ALERTS)


def test_each_alert_fires_and_holds_as_its_unit_tests_expect(promtool: str) -> None:
    run(promtool, "test", "rules", ALERT_TESTS)


def test_every_dashboard_panel_queries_the_chosen_prometheus_for_the_chosen_jobs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["job_id"]["definition"] == "label_values(bsky_backfill_job_state, job_id)"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert 'job_id=~"$job_id"' in target["expr"], panel["title"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline query check, but it parses recording rules.
    rules = []
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"panel:{panel['id']}_{target['refId']}", "expr": expr})
    as_rules = tmp_path / "dashboard_rules.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(promtool, "check", "rules", as_rules)


def test_every_metric_the_deploy_files_name_has_samples_in_a_real_scrape(
    scrape: tuple[Scrape, str],
) -> None:
    samples, text = scrape
    # A counter no event has touched yet (no retry in this run, say) is declared, no sample.
    declared = set(re.findall(r"^# TYPE (\w+)", text, re.MULTILINE))
    for path in (ALERTS, ALERT_TESTS, DASHBOARD):
        names = set(METRIC_NAME.findall(path.read_text()))
        assert names, path
        missing = sorted(
            name
            for name in names
            if not samples.get(name) and not {name, re.sub(_SUFFIX, "", name)} & declared
        )
        assert not missing, f"{path.name} names metrics a running job does not export: {missing}"
