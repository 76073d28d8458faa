"""Both emulators started together, with the contract's variables pointing at them.

Design notes (what persists between runs, several projects): docs/local-sandbox.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.provisioning import Provisioned, ProvisioningSpec, provision
from mixpanel_assets.projects import PROJECTS_VARIABLE, ProjectSpec, load_projects
from mixpanel_assets.sandbox.mixpanel_emulator import MixpanelEmulator
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.xdm.spec import MAPPING_VARIABLE, MappingRules, load_rules

MIXPANEL_USERNAME = "local-sandbox.mp-service-account"
MIXPANEL_SECRET = "local-sandbox-secret"
CLIENT_ID = "local-sandbox-client"
CLIENT_SECRET = "local-sandbox-client-secret"
ORG_ID = "LOCALSANDBOX@AdobeOrg"
TENANT_ID = "localsandbox"
HISTORY_DAYS = 30
EXAMPLE_PROJECTS_FILE = Path(__file__).with_name("example_projects.yaml")


@dataclass
class LocalSandbox:
    """The running emulators, the provisioned dataset and the settings pointing at them."""

    data_dir: Path
    mixpanel: MixpanelEmulator
    platform: PlatformEmulator
    provisioned: Provisioned
    start_date: date
    # With a projects file: each project's emulator by name, and the file pointed at them.
    projects: dict[str, MixpanelEmulator] = field(default_factory=dict)
    projects_file: Path | None = None

    @property
    def dataset_id(self) -> str:
        """The id of the provisioned AEP dataset."""
        return self.provisioned.dataset_id

    @property
    def dataset_dir(self) -> Path:
        """Where the platform emulator keeps the dataset's accepted records (Parquet)."""
        return self.data_dir / "local_sandbox" / "platform" / "datasets" / self.dataset_id

    def environment(self) -> dict[str, str]:
        """The contract's variables, pointed at the emulators."""
        return {**self._mixpanel_environment(), **self._aep_environment()}

    def _mixpanel_environment(self) -> dict[str, str]:
        if self.projects_file is not None:
            variables = {PROJECTS_VARIABLE: str(self.projects_file)}
            for spec in load_projects(self.projects_file):
                username, secret = project_credentials(spec)
                variables[spec.username_variable] = username
                variables[spec.secret_variable] = secret
            return variables
        return {
            "MIXPANEL_PROJECT_ID": self.mixpanel.project_id,
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": MIXPANEL_USERNAME,
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": MIXPANEL_SECRET,
            "MIXPANEL_EXPORT_URL": self.mixpanel.export_url,
            "MIXPANEL_PROJECT_TIMEZONE": self.mixpanel.timezone,
            "MIXPANEL_EVENT_TIME": self.mixpanel.time_regime,
            "MIXPANEL_START_DATE": self.start_date.isoformat(),
        }

    def _aep_environment(self) -> dict[str, str]:
        return {
            "AEP_IMS_URL": self.platform.url,
            "AEP_PLATFORM_URL": self.platform.url,
            "AEP_CLIENT_ID": CLIENT_ID,
            "AEP_CLIENT_SECRET": CLIENT_SECRET,
            "AEP_ORG_ID": ORG_ID,
            "AEP_SANDBOX_NAME": "prod",
            "AEP_DATASET_ID": self.dataset_id,
            "AEP_TENANT_ID": TENANT_ID,
            "MIXPANEL_ASSETS_DATA_DIR": str(self.data_dir),
        }


@contextmanager
def local_sandbox(
    data_dir: Path,
    *,
    events_per_day: int = 400,
    timezone: str = "UTC",
    time_regime: str = "utc",
    processing_seconds: float = 0.2,
    clock: Callable[[], float] | None = None,
    projects_file: Path | None = None,
) -> Iterator[LocalSandbox]:
    """Start the emulators on free loopback ports; stop them on exit.

    With ``projects_file``, a Mixpanel emulator serves each of its projects.
    """
    data_dir = data_dir.resolve()
    specs = load_projects(projects_file) if projects_file is not None else []
    projects = {spec.name or "": _project_emulator(spec, events_per_day, clock) for spec in specs}
    mixpanel = (
        next(iter(projects.values()))
        if projects
        else MixpanelEmulator(
            username=MIXPANEL_USERNAME,
            secret=MIXPANEL_SECRET,
            events_per_day=events_per_day,
            timezone=timezone,
            time_regime=time_regime,
            clock=clock,
        )
    )
    platform = PlatformEmulator(
        data_dir / "local_sandbox" / "platform",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        org_id=ORG_ID,
        tenant_id=TENANT_ID,
        processing_seconds=processing_seconds,
    )
    with ExitStack() as running:
        for emulator in list(projects.values()) or [mixpanel]:
            running.enter_context(emulator)
        running.enter_context(platform)
        client = AEPClient(
            ims_url=platform.url,
            platform_url=platform.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            org_id=ORG_ID,
            sandbox_name="prod",
        )
        yield LocalSandbox(
            data_dir=data_dir,
            mixpanel=mixpanel,
            platform=platform,
            provisioned=provision(client, ProvisioningSpec.for_mapping(TENANT_ID, _mapping())),
            start_date=datetime.now(ZoneInfo(timezone)).date() - timedelta(days=HISTORY_DAYS),
            projects=projects,
            projects_file=_pointed_projects_file(projects_file, projects, data_dir)
            if projects_file is not None
            else None,
        )


def _project_emulator(
    spec: ProjectSpec, events_per_day: int, clock: Callable[[], float] | None
) -> MixpanelEmulator:
    username, secret = project_credentials(spec)
    return MixpanelEmulator(
        project_id=spec.project_id or "",
        username=username,
        secret=secret,
        events_per_day=events_per_day,
        timezone=spec.project_timezone or "UTC",
        time_regime=spec.event_time or "utc",
        clock=clock,
    )


def project_credentials(spec: ProjectSpec) -> tuple[str, str]:
    """The service account a project's emulator accepts (each project its own)."""
    return f"local-sandbox.{spec.name}", f"local-sandbox-secret-{spec.name}"


def _pointed_projects_file(
    source: Path, projects: dict[str, MixpanelEmulator], data_dir: Path
) -> Path:
    """A copy of ``source`` whose projects export from their emulators (mapping paths kept)."""
    document = yaml.safe_load(source.read_text())
    for spec in load_projects(source):
        entry = document["projects"][spec.name]
        entry["export_url"] = projects[spec.name or ""].export_url
        if spec.mapping is not None:
            entry["mapping"] = spec.mapping
    target = data_dir / "local_sandbox" / "projects.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def _mapping() -> MappingRules:
    """The mapping the runs will use (MIXPANEL_ASSETS_MAPPING, else the default one)."""
    return load_rules(os.environ.get(MAPPING_VARIABLE, ""))
