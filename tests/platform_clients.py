"""An AEP client for a platform emulator, shared by the AEP tests."""

from typing import Any

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator


def emulator_client(platform: PlatformEmulator, client_secret: str, **settings: Any) -> AEPClient:
    """A client of ``platform`` with its default client and org; ``settings`` override."""
    return AEPClient(
        **{
            "ims_url": platform.url,
            "platform_url": platform.url,
            "client_id": "local-sandbox-client",
            "client_secret": client_secret,
            "org_id": "LOCALSANDBOX@AdobeOrg",
            "sandbox_name": "prod",
            **settings,
        }
    )
