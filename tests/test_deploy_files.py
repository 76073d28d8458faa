"""deploy/ checked against Dagster itself and against the rest of the project.

No Docker engine, cluster or Helm binary is needed: the instance files go through Dagster's own
instance-config validation and each run launcher's own config schema, and are loaded as a real
instance on a real PostgreSQL; the Helm values, the Kubernetes manifests, the compose file, the
Dockerfile and the README's commands are compared with those files, with pyproject.toml's pins and
with the contract's variables (the root .env.example).
"""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance import DagsterInstance
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer

from tests.services import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_INSTANCE = DEPLOY / "dagster.yaml"
DOCKER_INSTANCE = DEPLOY / "docker" / "dagster.yaml"
INSTANCE_FILES = (K8S_INSTANCE, DOCKER_INSTANCE)
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
CONFIG_MAP = DEPLOY / "helm" / "mixpanel-assets-config.yaml"
SECRET = DEPLOY / "helm" / "mixpanel-assets-secrets.example.yaml"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
DOCKER_WORKSPACE = DEPLOY / "docker" / "workspace.yaml"
DOCKER_ENV_EXAMPLE = DEPLOY / "docker" / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"

# The deployment's own variables, besides the contract's (which come from the root .env.example).
DEPLOYMENT_VARIABLES = ("MIXPANEL_ASSETS_SCRATCH_DIR", "MIXPANEL_ASSETS_COORDINATION_URL")
DAGSTER_POSTGRES_VARIABLES = (
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
)
SECRET_VARIABLES = {
    "MIXPANEL_SERVICE_ACCOUNT_SECRET",
    "AEP_CLIENT_SECRET",
    "MIXPANEL_ASSETS_COORDINATION_URL",
    "DAGSTER_POSTGRES_PASSWORD",
}
SCRATCH_MOUNT = "/scratch"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_file_values(path: Path) -> dict[str, str]:
    """NAME=value lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, separator, value = line.partition("=")
            assert separator, f"{path}: not NAME=value: {line!r}"
            values[name] = value
    return values


def contract_variables() -> list[str]:
    names = list(env_file_values(ROOT / ".env.example"))
    assert "MIXPANEL_PROJECT_ID" in names and "AEP_CLIENT_SECRET" in names
    return names + [name for name in DEPLOYMENT_VARIABLES if name not in names]


def run_settings(instance_yaml: Mapping[str, Any]) -> Mapping[str, Any]:
    """max_concurrent_runs and tag_concurrency_limits, wherever the file puts them."""
    if "runs" in instance_yaml.get("concurrency", {}):
        return instance_yaml["concurrency"]["runs"]
    return instance_yaml.get("run_coordinator", {}).get("config", {})


def dagster_pins() -> dict[str, str]:
    """Every `name==version` of the lock files (what make and the image install); the two agree."""
    found: dict[str, str] = {}
    for lock in (ROOT / "requirements.lock", ROOT / "deploy" / "requirements.lock"):
        pins = {}
        for line in lock.read_text().splitlines():
            name, separator, version = line.partition("==")
            if separator and not line.startswith("#"):
                pins[name.strip().lower()] = version.strip()
        for name in pins.keys() & found.keys():
            if name.startswith("dagster"):
                assert pins[name] == found[name], f"{lock.name}: {name}=={pins[name]}"
        found |= pins
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile_instructions() if found == keyword]


def dockerfile_env() -> dict[str, str]:
    values = {}
    for arguments in dockerfile("ENV"):
        for item in shlex.split(arguments):
            name, _, value = item.partition("=")
            values[name] = value
    return values


def dockerfile_cmd() -> list[str]:
    (cmd,) = dockerfile("CMD")
    return yaml.safe_load(cmd)


def option(args: list[str], *names: str) -> str:
    for index, arg in enumerate(args[:-1]):
        if arg in names:
            return args[index + 1]
    raise AssertionError(f"none of {names} in {args}")


def compose_named_volumes() -> dict[str, str]:
    """Compose volume key -> its fixed Docker name."""
    return {key: (spec or {}).get("name", key) for key, spec in load(COMPOSE)["volumes"].items()}


def docker_launcher_volumes() -> dict[str, str]:
    """Docker volume name -> mount path in a run's container."""
    launcher = load(DOCKER_INSTANCE)["run_launcher"]["config"]
    return dict(volume.split(":")[:2] for volume in launcher["container_kwargs"]["volumes"])


def helm_deployment() -> Mapping[str, Any]:
    (deployment,) = load(HELM_VALUES)["dagster-user-deployments"]["deployments"]
    return deployment


def readme_deploying_section() -> str:
    """The deployment guide the README links to."""
    assert "docs/deploying.md" in (ROOT / "README.md").read_text()
    return (ROOT / "docs" / "deploying.md").read_text()


@pytest.fixture
def postgres_variables(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": "5432",
        "DAGSTER_POSTGRES_USER": "dagster",
        "DAGSTER_POSTGRES_PASSWORD": "secret",
        "DAGSTER_POSTGRES_DB": "dagster",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def every_variable(monkeypatch: pytest.MonkeyPatch, postgres_variables: dict[str, str]) -> None:
    """Every variable of deploy/docker/.env.example set, as compose sets it for the daemon."""
    for name, value in env_file_values(DOCKER_ENV_EXAMPLE).items():
        monkeypatch.setenv(name, value)


# --- The instance files, through Dagster's own validation ---------------------------------------


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_instance_file_passes_dagsters_instance_validation(
    path: Path, postgres_variables: dict[str, str]
) -> None:
    config, custom_class = dagster_instance_config(str(path.parent), config_filename=path.name)

    assert custom_class is None
    postgres_db = config["storage"]["postgres"]["postgres_db"]
    assert {
        field: source["env"] for field, source in postgres_db.items() if isinstance(source, dict)
    } == {
        "hostname": "DAGSTER_POSTGRES_HOST",
        "port": "DAGSTER_POSTGRES_PORT",
        "username": "DAGSTER_POSTGRES_USER",
        "password": "DAGSTER_POSTGRES_PASSWORD",
        "db_name": "DAGSTER_POSTGRES_DB",
    }
    # psycopg2 is what dagster-postgres installs; SQLAlchemy 2.1 would pick psycopg 3 otherwise.
    assert postgres_db["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 2
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["max_retries"] == 1
    assert config["telemetry"] == {"enabled": False}
    assert "retention" in config


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_run_launcher_config_fits_the_launchers_own_schema(
    path: Path, every_variable: None
) -> None:
    launcher = load(path)["run_launcher"]
    launcher_class = class_from_code_pointer(launcher["module"], launcher["class"])

    processed = process_config(launcher_class.config_type(), launcher["config"])

    assert processed.success, processed.errors
    assert processed.value is not None


def test_kubernetes_launcher_settings_make_a_valid_pod(every_variable: None) -> None:
    from dagster_k8s.container_context import K8sContainerContext

    config = load(K8S_INSTANCE)["run_launcher"]["config"]

    # The k8s models reject an unknown field or a malformed volume.
    context = K8sContainerContext(
        env_config_maps=config["env_config_maps"],
        env_secrets=config["env_secrets"],
        volumes=config["volumes"],
        volume_mounts=config["volume_mounts"],
        resources=config["resources"],
    )

    pod = context.run_k8s_config.pod_spec_config
    container = context.run_k8s_config.container_config
    assert [volume["name"] for volume in pod["volumes"]] == ["scratch"]
    assert "empty_dir" in pod["volumes"][0]
    assert container["volume_mounts"] == [{"name": "scratch", "mount_path": SCRATCH_MOUNT}]
    assert config["env_secrets"] == ["mixpanel-assets-secrets"]
    assert config["env_config_maps"] == ["mixpanel-assets-config"]
    assert config["dagster_home"] == dockerfile_env()["DAGSTER_HOME"]


def test_docker_launcher_builds_without_an_engine_and_passes_every_variable(
    every_variable: None,
) -> None:
    launcher = load(DOCKER_INSTANCE)["run_launcher"]
    launcher_class = class_from_code_pointer(launcher["module"], launcher["class"])
    processed = process_config(launcher_class.config_type(), launcher["config"])
    assert processed.success, processed.errors

    built = launcher_class(**processed.value)

    needed = set(contract_variables()) | set(DAGSTER_POSTGRES_VARIABLES)
    assert needed <= set(built.env_vars), sorted(needed - set(built.env_vars))
    # The launcher reads each name from the daemon's environment and fails on a missing one: every
    # name must be a line of deploy/docker/.env.example (compose's env_file).
    assert set(built.env_vars) <= set(env_file_values(DOCKER_ENV_EXAMPLE))


# --- The instance on a real PostgreSQL -----------------------------------------------------------


@pytest.fixture
def instance_database(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    name = "deploy_" + re.sub(r"\W", "_", request.node.callspec.id).lower()[-40:]
    postgres.create_database(name)
    for variable, value in {
        "DAGSTER_POSTGRES_HOST": postgres.host,
        "DAGSTER_POSTGRES_PORT": str(postgres.port),
        "DAGSTER_POSTGRES_USER": postgres.user,
        "DAGSTER_POSTGRES_PASSWORD": postgres.password,
        "DAGSTER_POSTGRES_DB": name,
    }.items():
        monkeypatch.setenv(variable, value)
    yield


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_instance_file_runs_on_a_real_postgres(
    path: Path, instance_database: None, tmp_path: Path
) -> None:
    shutil.copy(path, tmp_path / "dagster.yaml")

    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        concurrency = instance.get_concurrency_config()
        run_queue = concurrency.run_queue_config
        assert run_queue is not None
        assert run_queue.max_concurrent_runs == 10
        assert [
            (limit["key"], limit.get("value"), limit["limit"])
            for limit in run_queue.tag_concurrency_limits
        ] == [
            ("dagster/backfill", {"applyLimitPerUniqueValue": True}, 2),
            ("dagster/partition", {"applyLimitPerUniqueValue": True}, 1),
        ]
        assert concurrency.pool_config.default_pool_limit == 2
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.telemetry_enabled
        # The storage is live: the instance's tables exist in that database.
        assert instance.get_runs_count() == 0
        if path == DOCKER_INSTANCE:
            # The Docker launcher is built lazily and needs no engine until a run is launched.
            assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
    finally:
        instance.dispose()


# --- One set of settings everywhere --------------------------------------------------------------


def test_the_two_instance_files_differ_only_in_the_run_launcher() -> None:
    kubernetes, docker = load(K8S_INSTANCE), load(DOCKER_INSTANCE)

    assert kubernetes["run_launcher"]["class"] == "K8sRunLauncher"
    assert docker["run_launcher"]["class"] == "DockerRunLauncher"
    del kubernetes["run_launcher"], docker["run_launcher"]
    assert kubernetes == docker


def test_run_limits_and_pools_agree_in_root_production_and_helm() -> None:
    root, production = load(ROOT / "dagster.yaml"), load(K8S_INSTANCE)
    helm = load(HELM_VALUES)
    production_runs = run_settings(production)

    # The run queue's limits per tag: one machine and production alike.
    assert run_settings(root)["tag_concurrency_limits"] == production_runs["tag_concurrency_limits"]
    assert root["concurrency"]["pools"] == production["concurrency"]["pools"]
    assert root["run_retries"] == production["run_retries"]
    assert root["telemetry"] == production["telemetry"]
    assert production_runs["max_concurrent_runs"] >= run_settings(root)["max_concurrent_runs"]

    # The chart renders the same `concurrency:` block.
    assert helm["concurrency"]["enabled"] is True
    helm_runs = helm["concurrency"]["runs"]
    assert helm_runs["maxConcurrentRuns"] == production_runs["max_concurrent_runs"]
    assert helm_runs["tagConcurrencyLimits"] == production_runs["tag_concurrency_limits"]
    assert (
        helm["concurrency"]["pools"]["defaultLimit"]
        == production["concurrency"]["pools"]["default_limit"]
    )
    # With `concurrency` set, Dagster refuses run limits in the run coordinator's config too.
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator.get("config", {}).get("queuedRunCoordinator", {})
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued)

    daemon = helm["dagsterDaemon"]
    assert daemon["runRetries"] == {
        "enabled": production["run_retries"]["enabled"],
        "maxRetries": production["run_retries"]["max_retries"],
    }
    monitoring = production["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"],
    }
    assert helm["telemetry"] == production["telemetry"]
    assert (
        helm["postgresql"]["postgresqlScheme"]
        == production["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    retention = production["retention"]
    assert helm["retention"]["enabled"] is True
    assert (
        helm["retention"]["schedule"]["purgeAfterDays"] == retention["schedule"]["purge_after_days"]
    )
    assert helm["retention"]["sensor"]["purgeAfterDays"] == retention["sensor"]["purge_after_days"]


def test_helm_code_server_and_run_pods_get_what_deploy_dagster_yaml_gives_them() -> None:
    from dagster_k8s.container_context import K8sContainerContext

    helm, production = load(HELM_VALUES), load(K8S_INSTANCE)["run_launcher"]["config"]
    deployment = helm_deployment()
    launcher = helm["runLauncher"]
    assert helm["dagster-user-deployments"]["enabled"] is True
    assert launcher["type"] == "K8sRunLauncher"
    k8s_launcher = launcher["config"]["k8sRunLauncher"]

    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert option(deployment["codeServerArgs"], "-m", "--module-name") == module
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["port"] == int(option(dockerfile_cmd(), "-p", "--port"))
    assert deployment["image"]["tag"] != "latest"
    assert deployment["resources"]["requests"] and deployment["resources"]["limits"]

    for holder in (deployment, k8s_launcher):
        assert [ref["name"] for ref in holder["envSecrets"]] == production["env_secrets"]
        assert [ref["name"] for ref in holder["envConfigMaps"]] == production["env_config_maps"]
        assert holder["volumes"] == production["volumes"]
        assert holder["volumeMounts"] == production["volume_mounts"]
    assert k8s_launcher["resources"] == production["resources"]

    # The code server's context travels with each run and meets the launcher's own settings:
    # their identical volumes must merge into one (a pod with two volumes of one name is refused).
    server = K8sContainerContext(
        volumes=deployment["volumes"], volume_mounts=deployment["volumeMounts"]
    )
    own = K8sContainerContext(
        volumes=k8s_launcher["volumes"], volume_mounts=k8s_launcher["volumeMounts"]
    )
    merged = own.merge(server).run_k8s_config
    assert [volume["name"] for volume in merged.pod_spec_config["volumes"]] == ["scratch"]
    assert len(merged.container_config["volume_mounts"]) == 1

    # The chart's instance lives where the image puts DAGSTER_HOME.
    assert (
        helm.get("dagsterHome", dockerfile_env()["DAGSTER_HOME"])
        == dockerfile_env()["DAGSTER_HOME"]
    )


# --- Variables -----------------------------------------------------------------------------------


def test_every_variable_is_in_the_kubernetes_manifests_once() -> None:
    config_map, secret = load(CONFIG_MAP), load(SECRET)
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["name"] == (
        "mixpanel-assets-config"
    )
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "mixpanel-assets-secrets"
    plain, secret_values = config_map["data"], secret["stringData"]

    assert all(isinstance(value, str) for value in plain.values())
    assert set(secret_values) == SECRET_VARIABLES
    assert not set(plain) & set(secret_values)
    needed = set(contract_variables()) | set(DAGSTER_POSTGRES_VARIABLES)
    assert needed <= set(plain) | set(secret_values), sorted(
        needed - set(plain) - set(secret_values)
    )
    assert plain["MIXPANEL_ASSETS_SCRATCH_DIR"] == SCRATCH_MOUNT
    # The secret manifest holds placeholders only.
    assert all("replace-with" in value for value in secret_values.values())
    assert urlsplit(secret_values["MIXPANEL_ASSETS_COORDINATION_URL"]).scheme == "postgresql"


def test_readme_secret_command_sets_every_secret_variable() -> None:
    section = readme_deploying_section()
    command = re.search(
        r"kubectl -n dagster create secret generic mixpanel-assets-secrets(?:[^\n]*\\\n)*[^\n]*",
        section,
    )
    assert command, "README: no `kubectl create secret generic mixpanel-assets-secrets` command"
    assert set(re.findall(r"--from-literal=([A-Z_]+)=", command.group(0))) == SECRET_VARIABLES
    assert "create secret generic dagster-postgresql-secret" in section
    assert "--from-literal=postgresql-password=" in section


def test_docker_env_example_sets_every_variable_for_compose() -> None:
    values = env_file_values(DOCKER_ENV_EXAMPLE)

    needed = set(contract_variables()) | set(DAGSTER_POSTGRES_VARIABLES)
    assert needed <= set(values), sorted(needed - set(values))
    # Runs are separate containers: they must share the rate budget and locks through PostgreSQL,
    # here the compose `postgres` with the instance's own credentials.
    url = urlsplit(values["MIXPANEL_ASSETS_COORDINATION_URL"])
    assert url.scheme == "postgresql"
    assert url.hostname == values["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert url.port == int(values["DAGSTER_POSTGRES_PORT"])
    assert url.username == values["DAGSTER_POSTGRES_USER"]
    assert url.password == values["DAGSTER_POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == values["DAGSTER_POSTGRES_DB"]
    # The data and scratch folders are the volumes every run container mounts.
    mounts = docker_launcher_volumes()
    assert values["MIXPANEL_ASSETS_DATA_DIR"] in mounts.values()
    assert values["MIXPANEL_ASSETS_SCRATCH_DIR"] == SCRATCH_MOUNT in mounts.values()
    assert values["MIXPANEL_ASSETS_IMAGE"] == load(COMPOSE)["x-dagster-image"].split(":-", 1)[
        1
    ].rstrip("}")


# --- Versions, image, compose and workspace ------------------------------------------------------


def test_pinned_dagster_versions_match_the_lock_files() -> None:
    pins = dagster_pins()
    assert pins["dagster"] == pins["dagster-webserver"]
    texts = {
        path: path.read_text()
        for path in (DOCKERFILE, HELM_VALUES, COMPOSE, DOCKER_INSTANCE, K8S_INSTANCE)
    }
    found = 0
    for path, text in texts.items():
        for name, version in re.findall(r"\b(dagster(?:-[a-z0-9]+)*)==([0-9][\w.]*)", text):
            assert pins.get(name) == version, f"{path.name}: {name}=={version}, pyproject {pins}"
            found += 1
    assert found >= 5
    # The chart is released with dagster itself: the values and the README name that version.
    assert f"dagster/dagster {pins['dagster']}" in texts[HELM_VALUES]
    assert f"--version {pins['dagster']}" in texts[HELM_VALUES]
    section = readme_deploying_section()
    assert f"helm upgrade --install dagster dagster/dagster --version {pins['dagster']}" in section
    # The image installs the project itself with the extra that carries those pins.
    deploy_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["deploy"]
    assert any(requirement.startswith("dagster-k8s") for requirement in deploy_extra)
    assert any(requirement.startswith("dagster-docker") for requirement in deploy_extra)
    assert any('-c deploy/requirements.lock ".[deploy]"' in run for run in dockerfile("RUN")), (
        "the image installs the deploy extra with the deploy lock's versions"
    )
    assert "deploy/requirements.lock" in " ".join(dockerfile("COPY"))


def test_base_images_are_pinned() -> None:
    (base,) = dockerfile("FROM")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    postgres_image = load(COMPOSE)["services"]["postgres"]["image"]
    assert re.fullmatch(r"postgres:15\.\d+(-bookworm)?", postgres_image), postgres_image


def test_dockerfile_serves_the_code_location_as_a_non_root_user() -> None:
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert option(cmd, "-m", "--module-name") == module
    assert option(cmd, "-h", "--host") == "0.0.0.0"
    assert dockerfile("EXPOSE") == [option(cmd, "-p", "--port")]
    (user,) = dockerfile("USER")
    assert user.split(":")[0] not in ("root", "0")
    home = dockerfile_env()["DAGSTER_HOME"]
    assert f"deploy/dagster.yaml {home}/dagster.yaml" in " ".join(
        arguments.replace("${DAGSTER_HOME}", home) for arguments in dockerfile("COPY")
    )
    copied = " ".join(dockerfile("COPY"))
    for needed in ("pyproject.toml", "README.md", "mixpanel_assets/"):
        assert needed in copied


def test_dockerignore_keeps_local_state_out_and_lets_the_sources_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", "data", ".dagster_home", ".git", ".env"):
        assert excluded in patterns
    for needed in (
        "pyproject.toml",
        "README.md",
        "mixpanel_assets",
        "deploy",
        "deploy/dagster.yaml",
    ):
        assert not any(Path(needed).match(pattern) for pattern in patterns if "*" not in pattern)


def test_compose_services_workspace_and_launcher_fit_together() -> None:
    compose = load(COMPOSE)
    services = compose["services"]
    workspace = load(DOCKER_WORKSPACE)
    launcher = load(DOCKER_INSTANCE)["run_launcher"]["config"]
    home = dockerfile_env()["DAGSTER_HOME"]

    # The workspace points at the code server's service and the image's port.
    (location,) = workspace["load_from"]
    server = location["grpc_server"]
    assert server["location_name"] == "mixpanel_assets"
    user_code = services[server["host"]]
    assert str(server["port"]) == option(dockerfile_cmd(), "-p", "--port")
    assert str(server["port"]) in [str(port) for port in user_code["expose"]]
    assert user_code["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / user_code["build"]["context"]).resolve() == ROOT
    # The code server names the image runs start from: its own.
    assert user_code["environment"]["DAGSTER_CURRENT_IMAGE"] == user_code["image"]

    for name in (server["host"], "webserver", "daemon"):
        service = services[name]
        assert service["image"] == user_code["image"]
        assert service["env_file"] == ".env"
        assert f"./dagster.yaml:{home}/dagster.yaml:ro" in service["volumes"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):
        service = services[name]
        workspace_path = option(service["command"], "-w", "--workspace")
        assert f"./workspace.yaml:{workspace_path}:ro" in service["volumes"]
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert "healthcheck" in services["postgres"]

    # Run containers join the compose network and mount the compose volumes, by their fixed names.
    (network,) = compose["networks"].values()
    assert launcher["network"] == network["name"]
    named = compose_named_volumes()
    for volume, mount in docker_launcher_volumes().items():
        assert volume in named.values()
        key = next(key for key, name in named.items() if name == volume)
        assert f"{key}:{mount}" in user_code["volumes"]


def test_readme_deploying_section_gives_the_commands_it_relies_on() -> None:
    section = readme_deploying_section()
    for command in (
        "cp deploy/docker/.env.example deploy/docker/.env",
        "docker build -f deploy/Dockerfile -t mixpanel-assets:local .",
        "docker compose -f deploy/docker/compose.yaml up",
        "helm repo add dagster https://dagster-io.github.io/helm",
        "kubectl -n dagster apply -f deploy/helm/mixpanel-assets-config.yaml",
        "-f deploy/helm/values.yaml",
        "MIXPANEL_ASSETS_COORDINATION_URL",
        "MIXPANEL_ASSETS_SCRATCH_DIR",
        "mixpanel_export",
    ):
        assert command in section, command


# --- Object storage settings ---------------------------------------------------------------------

AWS_VARIABLE = re.compile(r"\bAWS_[A-Z0-9_]+\b")


def _variables_botocore_reads() -> set[str]:
    """The AWS_* variables the botocore that the `s3` extra installs reads, from botocore itself."""
    import inspect

    import botocore.configprovider
    import botocore.credentials

    read = {
        name
        for spec in botocore.configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES.values()
        for name in ([spec[1]] if isinstance(spec[1], str) else list(spec[1] or []))
    }
    provider = botocore.credentials.EnvProvider
    read |= {provider.ACCESS_KEY, provider.SECRET_KEY, *provider.TOKENS}
    if "name='AWS_ENDPOINT_URL'" in inspect.getsource(botocore.configprovider):
        read.add("AWS_ENDPOINT_URL")
    return read


def test_the_s3_settings_named_are_the_ones_botocore_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    named_in = (DOCKER_ENV_EXAMPLE, DOCKER_INSTANCE, CONFIG_MAP, ROOT / "docs" / "security.md")
    named = {name for path in named_in for name in AWS_VARIABLE.findall(path.read_text())}
    # docs/security.md names AWS_REGION once, to say botocore does not read it.
    named.discard("AWS_REGION")
    assert "AWS_DEFAULT_REGION" in named
    assert named <= _variables_botocore_reads(), sorted(named - _variables_botocore_reads())
    for path in (DOCKER_ENV_EXAMPLE, DOCKER_INSTANCE):
        assert "AWS_REGION" not in AWS_VARIABLE.findall(path.read_text()), path

    import botocore.session

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert botocore.session.Session().get_config_variable("region") is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert botocore.session.Session().get_config_variable("region") == "eu-west-3"
