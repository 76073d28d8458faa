"""The few Dagster preview and beta warnings this project accepts, silenced exactly, and why.

Each is printed while the code location loads (every ``dagster`` command, code server and run
worker), so an operator would read it on every run though nothing is wrong. Only these messages
are silenced; any other warning still shows. Imports nothing, so that every process (mapping
workers too) can install the filters for free.
"""

import warnings

# Message starts (regular expressions) of the accepted warnings, with why no stable API does
# the job in Dagster 1.13.
ACCEPTED = (
    # A check per day: without partitions_def a check's result belongs to the whole asset, so
    # the UI could not show which days passed their checks. The unpartitioned form is stable
    # but loses exactly that (the check still runs in the day's run).
    r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    # Links from each asset to its source (ownership.py): the only way Dagster offers.
    r"Function `with_source_code_references` is currently in beta",
    r"Class `LocalFileCodeReference` is currently in beta",
    r"Class `CodeReferencesMetadataValue` is currently in beta",
)


def silence_accepted_warnings() -> None:
    """Install the filters (idempotent: ``warnings`` drops an identical filter first)."""
    for message in ACCEPTED:
        warnings.filterwarnings("ignore", message=message, category=Warning)
