"""The `reload:` section: when the gateway re-reads flm.yaml while serving.

A reload also happens on SIGHUP and `flm-gateway reload`, whatever this says.
"""

from __future__ import annotations

from pydantic import Field

from flm_gateway.config.types import Duration, StrictModel


class ReloadSettings(StrictModel):
    """Watching flm.yaml for changes."""

    watch: bool = Field(True, description="Reload automatically when flm.yaml changes on disk.")
    poll_interval: Duration = Field(
        1.0, description="How often the file's size, time stamp and inode are checked."
    )
    debounce: Duration = Field(
        0.5,
        description=(
            "How long the file must stay unchanged before it is reloaded, so a burst of "
            "edits (or an editor's save-by-rename) causes one reload."
        ),
    )
