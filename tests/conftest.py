"""Suite-wide settings."""

from hypothesis import settings

# Property tests check what holds for every example, not how fast one runs:
# on a loaded two-core CI machine a single example can take a second, which
# hypothesis's default 200 ms deadline would report as a failure.
settings.register_profile("gannet", deadline=None)
settings.load_profile("gannet")

# Gannet keeps its identity key and pinned server keys in the user's config
# directory (docs/security.md). The suite, and the commands it starts, get
# their own for the run, so it neither reads nor writes the user's.
import os  # noqa: E402
import tempfile  # noqa: E402

_CONFIG_HOME = tempfile.mkdtemp(prefix="gannet-test-config-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
