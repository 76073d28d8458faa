"""The code location: ``defs``, loaded by ``dagster dev``, the ``dagster`` CLI and workspace.yaml.

Resources read the contract's variables through ``EnvVar`` at launch. The partitions need the
start date and project timezone when the code loads, so a missing MIXPANEL_START_DATE fails here,
with a message naming it; so does any mistake in MIXPANEL_ASSETS_PROJECTS's file (docs/projects.md).
"""

from mixpanel_assets.pipeline import build_definitions

defs = build_definitions()
