"""``python -m mixpanel_assets.aep.provision``: the schema and dataset, set up in AEP.

Reads the contract's AEP_* variables and AEP_TENANT_ID (not AEP_DATASET_ID: it prints it) and
the mapping (MIXPANEL_ASSETS_MAPPING, else the default one); creates what is missing (identity
namespaces, tenant field group, ExperienceEvent schema, primary identity descriptor, dataset);
says what it found or made, and ends with the ``export AEP_DATASET_ID=...`` line. Running it
again changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.aep.provisioning import (
    DATASET_NAME,
    SCHEMA_TITLE,
    ProvisioningSpec,
    provision,
)
from mixpanel_assets.aep.resource import client_from_environment
from mixpanel_assets.settings import required_value
from mixpanel_assets.xdm.spec import MAPPING_VARIABLE, load_rules


def main(argv: list[str] | None = None) -> int:
    """Provision the schema and dataset from the environment; 0 on success, 1 on an error."""
    parser = argparse.ArgumentParser(
        prog="python -m mixpanel_assets.aep.provision",
        description="Create the XDM schema and dataset mixpanel-assets writes to (idempotent).",
    )
    parser.add_argument("--dataset-name", default=DATASET_NAME, help="the dataset to use or make")
    parser.add_argument("--schema-title", default=SCHEMA_TITLE, help="the schema to use or make")
    args = parser.parse_args(argv)
    try:
        client = client_from_environment()
        tenant_id = required_value("AEP_TENANT_ID", "the tenant id AEP shows for the organisation")
        spec = ProvisioningSpec.for_mapping(
            tenant_id,
            load_rules(os.environ.get(MAPPING_VARIABLE, "")),
            dataset_name=args.dataset_name,
            schema_title=args.schema_title,
        )
        provisioned = provision(client, spec)
    except (AEPError, ValueError) as problem:  # ConfigError is a ValueError
        print(f"provisioning failed: {problem}", file=sys.stderr)
        return 1
    for line in provisioned.report():
        print(line)
    print("nothing changed" if not provisioned.created else f"{len(provisioned.created)} created")
    print(f"export AEP_DATASET_ID={provisioned.dataset_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
