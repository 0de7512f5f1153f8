"""Deployment files (compose, Dockerfile, .env.example, Kubernetes) agree with each other and with `Settings`.

There is no Docker engine or cluster on our machines, so these tests parse the files and check the invariants a
broken deployment would violate: scaled workers that clash, SIGKILL before a graceful hand-back, settings that do
not exist, KEDA watching the wrong key. `docker compose config` and `kubectl kustomize` run when installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml

from crawlq import __version__
from crawlq.settings import Settings
from crawlq_api.settings import ApiSettings
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY_DIR = ROOT / "deploy"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"
ENV_EXAMPLE = DEPLOY_DIR / ".env.example"
K8S_DIR = DEPLOY_DIR / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"

CHECK_COMMAND = ["crawlq", "worker", "--check"]
AOF_ARGS = [("--appendonly", "yes"), ("--appendfsync", "everysec")]
#: Interpolated by compose only; crawlq never reads them, so they must not collide with a setting.
COMPOSE_ONLY_VARIABLES = frozenset({"CRAWLQ_WORKERS", "CRAWLQ_IMAGE", "CRAWLQ_API_PORT"})
ENV_NAME = re.compile(r"\bCRAWLQ_[A-Z0-9_]+\b")
ENV_EXAMPLE_ENTRY = re.compile(r"^#?\s*(CRAWLQ_[A-Z0-9_]+)=(.*)$")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
DURATION_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

SETTING_ENV_NAMES = frozenset(f"CRAWLQ_{name.upper()}" for name in Settings.model_fields)
API_ENV_NAMES = frozenset(f"CRAWLQ_API_{name.upper()}" for name in ApiSettings.model_fields)  #: `crawlq serve`'s own
PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
GRAFANA_DIR = DEPLOY_DIR / "grafana"


# --- helpers


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Settings:
    """Settings as a process with exactly `env` (and no `.env` file) would see them."""
    for name in list(os.environ):
        if name.startswith("CRAWLQ_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return make_settings()


def compose_duration_s(value: str) -> float:
    """A compose duration (`30s`, `1m30s`, `500ms`) in seconds."""
    parts = DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"not a compose duration: {value!r}")
    return sum(float(number) * DURATION_UNITS_S[unit] for number, unit in parts)


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either the mapping or the `KEY=VALUE` list form."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        keyword, _, arguments = (logical + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        logical = ""
    return instructions


def copy_sources(arguments: str) -> list[str]:
    parts = [part for part in arguments.split() if not part.startswith("--")]
    return [source.rstrip("/") for source in parts[:-1]]


def env_example_entries() -> list[tuple[str, str]]:
    entries = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_EXAMPLE_ENTRY.match(line)
        if match:
            entries.append((match.group(1), match.group(2).strip()))
    return entries


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def k8s_files() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path != KUSTOMIZATION)


# --- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(KUSTOMIZATION.read_text()))


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s, by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in k8s_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = document
    return objects


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from_env(monkeypatch, {})


@pytest.fixture
def pod_settings(monkeypatch: pytest.MonkeyPatch, manifests: dict[tuple[str, str], Any]) -> Settings:
    """The settings a worker pod sees: the ConfigMap over the defaults."""
    return settings_from_env(monkeypatch, manifests["ConfigMap", "crawlq-config"]["data"])


@pytest.fixture
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


# --- helpers can fail


def test_compose_duration_parser() -> None:
    assert compose_duration_s("30s") == 30
    assert compose_duration_s("1m30s") == 90
    assert compose_duration_s("500ms") == 0.5
    for bad in ("30", "30 s", "s", "thirty"):
        with pytest.raises(ValueError):
            compose_duration_s(bad)


def test_dockerfile_parser_joins_continuations() -> None:
    text = '# c\nFROM a\nRUN one \\\n  # inside\n  && two\nCMD ["x"]\n'
    assert dockerfile_instructions(text) == [("FROM", "a"), ("RUN", "one  && two"), ("CMD", '["x"]')]


# --- compose


def test_worker_can_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a scaled service cannot have a fixed container_name"
    assert "ports" not in worker, "replicas would clash on a published host port"
    assert re.fullmatch(r"\$\{CRAWLQ_WORKERS:-[1-9]\d*\}", str(worker["deploy"]["replicas"]))
    assert worker["command"] == ["worker"]
    assert worker["restart"] == "unless-stopped"


def test_crawlq_services_share_the_anchor(compose: dict[str, Any]) -> None:
    anchor = compose["x-crawlq"]
    crawlq_services = {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or service.get("image") == anchor["image"]
    }
    assert {"worker", "producer", "api"} <= crawlq_services.keys()
    for name, service in crawlq_services.items():
        for key, value in anchor.items():
            if key == "environment":  # a service may add variables (the api its token), never change the anchor's
                assert value.items() <= compose_environment(service).items(), f"{name}.environment drops x-crawlq's"
                continue
            assert service.get(key) == value, f"{name}.{key} differs from x-crawlq"
    assert (ROOT / anchor["build"]["context"] / anchor["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_crawlq_services_reach_the_compose_redis(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    redis_url = urlsplit(settings_from_env(monkeypatch, compose_environment(compose["x-crawlq"])).redis_url)
    assert redis_url.hostname in compose["services"]
    assert compose["services"][redis_url.hostname]["image"].startswith("redis:")
    assert redis_url.port == 6379


def test_redis_is_healthchecked_durable_and_private(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "ports" not in redis
    assert redis["image"] == "redis:7-alpine"
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    command = redis["command"]
    for flag, value in AOF_ARGS:
        assert command[command.index(flag) + 1] == value
    volume_name, _, mount_path = redis["volumes"][0].partition(":")
    assert mount_path == "/data"
    assert volume_name in compose["volumes"], "Redis data must live on a named volume"


@pytest.mark.parametrize("service", ["worker", "producer"])
def test_crawlq_services_wait_for_healthy_redis(compose: dict[str, Any], service: str) -> None:
    assert compose["services"][service]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_healthcheck_and_stop_grace(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose["services"]["worker"]
    assert worker["healthcheck"]["test"] == ["CMD", *CHECK_COMMAND]
    settings = settings_from_env(monkeypatch, compose_environment(worker))
    assert compose_duration_s(worker["stop_grace_period"]) > settings.shutdown_grace_s


def test_producer_is_a_one_shot_tool(compose: dict[str, Any]) -> None:
    producer = compose["services"]["producer"]
    assert producer["profiles"] == ["tools"]
    assert producer["restart"] == "no"
    assert "./data:/data:ro" in producer["volumes"]
    assert "deploy" not in producer and "ports" not in producer
    assert producer["command"][0] == "submit"


def test_compose_environment_names_are_settings(compose: dict[str, Any]) -> None:
    for name, service in {"x-crawlq": compose["x-crawlq"], **compose["services"]}.items():
        known = SETTING_ENV_NAMES | (API_ENV_NAMES if name == "api" else frozenset())
        unknown = {key for key in compose_environment(service) if key.startswith("CRAWLQ_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config_accepts_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    for name in COMPOSE_ONLY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    rendered = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "tools", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    services = json.loads(rendered.stdout)["services"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "ports" not in services["worker"] and "ports" not in services["redis"]


# --- CRAWLQ_* names and .env.example


def test_compose_only_variables_are_not_settings() -> None:
    assert not COMPOSE_ONLY_VARIABLES & (SETTING_ENV_NAMES | API_ENV_NAMES)


@pytest.mark.parametrize(
    "path",
    [COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, DEPLOY_DIR / "README.md", *k8s_files(), KUSTOMIZATION],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_every_crawlq_name_is_a_setting(path: Path) -> None:
    names = set(ENV_NAME.findall(path.read_text()))
    allowed = SETTING_ENV_NAMES | API_ENV_NAMES
    if not path.is_relative_to(K8S_DIR):
        allowed |= COMPOSE_ONLY_VARIABLES
    assert not names - allowed, f"not crawlq settings: {sorted(names - allowed)}"


def test_env_example_lists_every_setting_once() -> None:
    names = [name for name, _ in env_example_entries()]
    assert len(names) == len(set(names)), "a variable is listed twice"
    assert set(names) - COMPOSE_ONLY_VARIABLES == SETTING_ENV_NAMES


def test_env_example_comments_every_setting() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if ENV_EXAMPLE_ENTRY.match(line):
            previous = lines[index - 1]
            assert previous.startswith("# ") and not ENV_EXAMPLE_ENTRY.match(previous), f"no comment above {line}"


def test_env_example_shows_the_real_defaults(monkeypatch: pytest.MonkeyPatch, defaults: Settings) -> None:
    documented = {
        name: unquote(value).replace("<version>", __version__)
        for name, value in env_example_entries()
        if name not in COMPOSE_ONLY_VARIABLES
    }
    assert settings_from_env(monkeypatch, documented).model_dump() == defaults.model_dump()


# --- Dockerfile


def test_dockerfile_base_user_and_entrypoint(instructions: list[tuple[str, str]], pyproject: dict[str, Any]) -> None:
    values = {keyword: arguments for keyword, arguments in instructions}  # the last one of each wins
    assert values["FROM"] == "python:3.11-slim"
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", " ".join(a for k, a in instructions if k == "ENV"))
    assert values["USER"].split(":")[0] not in {"root", "0"}
    assert json.loads(values["ENTRYPOINT"]) == ["crawlq"]
    assert "crawlq" in pyproject["project"]["scripts"]
    assert json.loads(values["CMD"]) == ["worker"]


def test_dockerfile_installs_dependencies_before_code(
    instructions: list[tuple[str, str]], pyproject: dict[str, Any]
) -> None:
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    copies = [
        (index, set(copy_sources(args))) for index, (keyword, args) in enumerate(instructions) if keyword == "COPY"
    ]
    copied = set().union(*(sources for _, sources in copies))
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied, "the build needs these files"
    first_code_copy = min(index for index, sources in copies if sources & packages)
    last_code_copy = max(index for index, sources in copies if sources & packages)
    runs = [(index, args) for index, (keyword, args) in enumerate(instructions) if keyword == "RUN"]
    dependency_runs = [index for index, args in runs if re.search(r"pip install\b.*\s-r\s", args)]
    project_runs = [index for index, args in runs if re.search(r"pip install\b[^&]*\s\.(\s|$)", args)]
    assert dependency_runs and dependency_runs[0] < first_code_copy, "dependencies must be a layer below the code"
    assert project_runs and project_runs[-1] > last_code_copy, "the project must be pip-installed after its code"
    assert not any(re.search(r"\s(-e|--editable)\s", args) for _, args in runs)


# --- Kubernetes


def test_kustomization_lists_exactly_the_manifests(kustomization: dict[str, Any]) -> None:
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert all((K8S_DIR / name).is_file() for name in listed)
    assert {K8S_DIR / name for name in listed} == set(k8s_files())


def test_manifests_share_one_namespace(
    kustomization: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]]
) -> None:
    namespaces = [name for kind, name in manifests if kind == "Namespace"]
    assert namespaces == [kustomization["namespace"]]
    for (kind, name), document in manifests.items():
        assert document.get("apiVersion"), f"{kind}/{name} has no apiVersion"
        if kind != "Namespace":
            assert document["metadata"]["namespace"] == kustomization["namespace"], f"{kind}/{name}"


def test_configmap_holds_valid_settings(
    manifests: dict[tuple[str, str], dict[str, Any]], pod_settings: Settings
) -> None:
    data = manifests["ConfigMap", "crawlq-config"]["data"]
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values must be strings"
    assert set(data) <= SETTING_ENV_NAMES
    redis_url = urlsplit(pod_settings.redis_url)
    service = manifests["Service", str(redis_url.hostname).split(".")[0]]
    assert redis_url.port in {port["port"] for port in service["spec"]["ports"]}


def test_worker_deployment(
    manifests: dict[tuple[str, str], dict[str, Any]], kustomization: dict[str, Any], pod_settings: Settings
) -> None:
    deployment = manifests["Deployment", "crawlq-worker"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    pod = template["spec"]
    assert pod["terminationGracePeriodSeconds"] > pod_settings.shutdown_grace_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (worker,) = pod["containers"]
    assert worker["image"] in {image["name"] for image in kustomization["images"]}
    assert worker["args"] == ["worker"]
    assert "ports" not in worker
    assert worker["livenessProbe"]["exec"]["command"] == CHECK_COMMAND
    assert worker["readinessProbe"]["exec"]["command"] == CHECK_COMMAND
    assert worker["resources"]["limits"]["memory"] == "256Mi"
    assert worker["resources"]["requests"]["memory"] and worker["resources"]["requests"]["cpu"]
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    config_maps = [source["configMapRef"]["name"] for source in worker["envFrom"] if "configMapRef" in source]
    assert config_maps and all(("ConfigMap", name) in manifests for name in config_maps)


def test_worker_runs_as_the_image_user(
    manifests: dict[tuple[str, str], dict[str, Any]], instructions: list[tuple[str, str]]
) -> None:
    image_user = [args for keyword, args in instructions if keyword == "USER"][-1]
    pod = manifests["Deployment", "crawlq-worker"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == image_user.split(":")[0]


def test_redis_statefulset_is_durable(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    statefulset = manifests["StatefulSet", "redis"]
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    service = manifests["Service", spec["serviceName"]]
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (redis,) = spec["template"]["spec"]["containers"]
    command = [*redis.get("command", []), *redis.get("args", [])]
    for flag, value in AOF_ARGS:
        assert command[command.index(flag) + 1] == value
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    assert {mount["name"] for mount in redis["volumeMounts"] if mount["mountPath"] == "/data"} & claims
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]


def test_keda_scales_the_worker_on_ready_urls(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    scaled = manifests["ScaledObject", "crawlq-worker"]["spec"]
    assert ("Deployment", scaled["scaleTargetRef"]["name"]) in manifests
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values must be strings"
    # the gauge /metrics exports for URLs ready to fetch (tests/api/test_metrics.py checks its value)
    assert re.fullmatch(r'sum\(crawlq_queue_urls\{state="ready"\}\)', metadata["query"])
    assert int(metadata["threshold"]) >= 1
    assert 0 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    if scaled["minReplicaCount"] == 0:  # KEDA activates when the value is above activationThreshold
        assert float(metadata.get("activationThreshold", "0")) == 0
    assert urlsplit(metadata["serverAddress"]).scheme in {"http", "https"}


def test_api_deployment_serves_with_the_secret_token(
    manifests: dict[tuple[str, str], dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    deployment = manifests["Deployment", "crawlq-api"]
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (api,) = template["spec"]["containers"]
    assert api["image"] in {image["name"] for image in kustomization["images"]}
    assert api["args"][:1] == ["serve"] and api["args"][api["args"].index("--host") + 1] == "0.0.0.0"
    port = int(api["args"][api["args"].index("--port") + 1])
    assert {entry["containerPort"] for entry in api["ports"]} == {port}
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    secret_names = [source["secretRef"]["name"] for source in api["envFrom"] if "secretRef" in source]
    (secret_name,) = secret_names
    secret = manifests["Secret", secret_name]["stringData"]
    assert set(secret) <= API_ENV_NAMES and "CRAWLQ_API_TOKEN" in secret
    service = manifests["Service", "crawlq-api"]["spec"]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    assert {entry["targetPort"] for entry in service["ports"]} <= {"http", port}


def test_the_secret_placeholder_cannot_be_served(
    manifests: dict[tuple[str, str], dict[str, Any]], defaults: Settings
) -> None:
    from crawlq.errors import ConfigError
    from crawlq_api.app import create_app

    token = manifests["Secret", "crawlq-api"]["stringData"]["CRAWLQ_API_TOKEN"]
    with pytest.raises(ConfigError, match="placeholder"):
        create_app(defaults, ApiSettings(_env_file=None, token=token))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, check=True, timeout=60
    )
    documents = [document for document in yaml.safe_load_all(rendered.stdout) if document]
    assert {(document["kind"], document["metadata"]["name"]) for document in documents} == set(manifests)


def _policy(command: list[str]) -> str | None:
    return command[command.index("--maxmemory-policy") + 1] if "--maxmemory-policy" in command else None


def test_redis_never_evicts(compose: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Both Redis deployments set `maxmemory-policy noeviction` explicitly: an evicting Redis loses URLs."""
    assert _policy(compose["services"]["redis"]["command"]) == "noeviction"
    (redis,) = manifests["StatefulSet", "redis"]["spec"]["template"]["spec"]["containers"]
    assert _policy([*redis.get("command", []), *redis.get("args", [])]) == "noeviction"


def test_keda_version_note_matches_the_fields_used() -> None:
    """`activationThreshold` needs KEDA 2.8; the comment must not promise less."""
    text = (ROOT / "deploy" / "k8s" / "keda-scaledobject.yaml").read_text()
    assert "activationThreshold" in text
    (version,) = re.findall(r"KEDA >= (\d+\.\d+)", text)
    assert tuple(int(part) for part in version.split(".")) >= (2, 8), version


# --- the API in compose, Prometheus and Grafana


def test_compose_api_requires_a_token_and_publishes_its_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    assert command[0] == "serve" and command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert api["ports"] == [f"${{CRAWLQ_API_PORT:-{port}}}:{port}"]
    token = compose_environment(api)["CRAWLQ_API_TOKEN"]
    assert re.fullmatch(r"\$\{CRAWLQ_API_TOKEN:\?[^}]+\}", token), "compose must refuse to start without a token"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_monitoring_profile_scrapes_the_api(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), "loopback only"
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    api_command = services["api"]["command"]
    assert job["static_configs"][0]["targets"] == [f"api:{api_command[api_command.index('--port') + 1]}"]
    mounts = {volume.split(":")[0] for volume in services["prometheus"]["volumes"]}
    assert "./deploy/prometheus" in mounts
    assert "/metrics" in ApiSettings(_env_file=None).public_paths, "an unauthenticated scrape needs /metrics public"


def test_grafana_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "crawlq.json").read_text())
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    recorded = {rule["record"] for group in yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
                for rule in group["rules"] if "record" in rule}  # fmt: skip
    exported = {"crawlq_queue_urls", "crawlq_workers_alive", "crawlq_batches_active", "crawlq_hosts_in_cooldown",
                "crawlq_urls_done_total", "crawlq_fetch_duration_seconds_bucket", "crawlq_responses_total",
                "crawlq_fetches_in_flight", "crawlq_worker_fetch_slots", "crawlq_retries_total",
                "crawlq_url_errors_total", "crawlq_batch_urls"}  # fmt: skip
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            names = set(re.findall(r"\bcrawlq[_:][a-z0-9_:]+", target["expr"]))
            assert names and names <= exported | recorded, (panel["title"], names - exported - recorded)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_config_and_rules() -> None:
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ):
        checked = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS_DIR, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_commented_worker_scrape_job(tmp_path: Path) -> None:
    """The commented `crawlq-workers` job, uncommented, is a valid config; the k8s port it keeps is commented
    in worker.yaml with the same name."""
    lines = (PROMETHEUS_DIR / "prometheus.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# - job_name: crawlq-workers" in line)
    config = lines[:start] + [line.replace("  # ", "  ", 1) for line in lines[start:]]
    (tmp_path / "prometheus.yml").write_text("\n".join(config) + "\n")
    (tmp_path / "rules.yml").write_text((PROMETHEUS_DIR / "rules.yml").read_text())
    checked = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "job_name: crawlq-workers" in "\n".join(config)
    assert "#     containerPort: 9108" in (Path(__file__).parent.parent / "deploy/k8s/worker.yaml").read_text()
