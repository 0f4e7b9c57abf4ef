"""compose/docker-compose.yml is valid by the Compose specification (there is no Docker
engine here to run it), and its image recipe installs the package as the README does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose" / "docker-compose.yml"
SPEC = Path(__file__).resolve().parent / "data" / "compose-spec" / "compose-spec.json"


def problems(document: Any) -> list[str]:
    """Every way the document breaks the Compose specification, as path: message."""
    validator = Draft202012Validator(json.loads(SPEC.read_text()))
    return [
        "/".join(str(part) for part in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(document)
    ]


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert problems(yaml.safe_load(COMPOSE.read_text())) == []


def test_the_check_refuses_a_file_that_breaks_the_specification() -> None:
    broken = yaml.safe_load(COMPOSE.read_text().replace("healthcheck:", "health_check:", 1))
    found = problems(broken)
    assert found, "a misspelt key passed the check"
    assert any("health_check" in problem for problem in found), found


def test_every_service_the_issue_names_is_there_with_health_checks() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"kafka", "redis", "schema-registry", "worker-1", "worker-2", "web", "producer"} <= set(
        services
    )
    for name in ("kafka", "redis", "schema-registry", "web"):
        assert "healthcheck" in services[name], name
    # The Parquet log is a volume the workers write and the web server reads.
    assert "offline-log" in spec["volumes"]
    assert services["worker-2"]["command"][2] == "worker-2"


def test_the_image_installs_the_package_like_the_readme() -> None:
    dockerfile = (REPO / "compose" / "Dockerfile").read_text()
    assert "pip install" in dockerfile
    assert "COPY pyproject.toml" in dockerfile
