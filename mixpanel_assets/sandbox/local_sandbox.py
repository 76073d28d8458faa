"""Both emulators started together, with the contract's variables pointing at them.

The Mixpanel emulator serves synthetic days; the platform emulator keeps its catalog and the
records it accepted under ``<data dir>/local_sandbox/platform``, so a second ``make demo`` finds
the batches of the first and replays them. The dataset is provisioned the way a real AEP sandbox
would be, through the platform APIs (``mixpanel_assets.aep.provisioning``): the first start
creates the schema and dataset, every later start finds them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.provisioning import Provisioned, ProvisioningSpec, provision
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


@dataclass
class LocalSandbox:
    data_dir: Path
    mixpanel: MixpanelEmulator
    platform: PlatformEmulator
    provisioned: Provisioned
    start_date: date

    @property
    def dataset_id(self) -> str:
        return self.provisioned.dataset_id

    @property
    def dataset_dir(self) -> Path:
        """Where the platform emulator keeps the dataset's accepted records (Parquet)."""
        return self.data_dir / "local_sandbox" / "platform" / "datasets" / self.dataset_id

    def environment(self) -> dict[str, str]:
        """The contract's variables, pointed at the emulators."""
        return {
            "MIXPANEL_PROJECT_ID": self.mixpanel.project_id,
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": MIXPANEL_USERNAME,
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": MIXPANEL_SECRET,
            "MIXPANEL_EXPORT_URL": self.mixpanel.export_url,
            "MIXPANEL_PROJECT_TIMEZONE": self.mixpanel.timezone,
            "MIXPANEL_EVENT_TIME": self.mixpanel.time_regime,
            "MIXPANEL_START_DATE": self.start_date.isoformat(),
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
) -> Iterator[LocalSandbox]:
    """Start both emulators on free loopback ports; stop them on exit."""
    data_dir = data_dir.resolve()
    mixpanel = MixpanelEmulator(
        username=MIXPANEL_USERNAME,
        secret=MIXPANEL_SECRET,
        events_per_day=events_per_day,
        timezone=timezone,
        time_regime=time_regime,
        clock=clock,
    )
    platform = PlatformEmulator(
        data_dir / "local_sandbox" / "platform",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        org_id=ORG_ID,
        tenant_id=TENANT_ID,
        processing_seconds=processing_seconds,
    )
    with mixpanel, platform:
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
        )


def _mapping() -> MappingRules:
    """The mapping the runs will use (MIXPANEL_ASSETS_MAPPING, else the default one)."""
    return load_rules(os.environ.get(MAPPING_VARIABLE, ""))
