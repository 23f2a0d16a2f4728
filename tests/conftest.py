"""Suite-wide settings."""

import pytest
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

# Tests that patch a core class's methods, copy a connection or hand the
# core a stand-in object need the pure-Python core: a compiled class can be
# neither patched nor copied, and it checks argument types. They are marked
# `pure`; under the compiled core they skip here and run in the suite's
# GANNET_PURE=1 pass (.ci/run).
def pytest_report_header(config):
    from gannet import _build

    return f"gannet core: {_build.build()}"


def pytest_collection_modifyitems(config, items):
    from gannet import _build

    if _build.build() != "compiled":
        return
    skip = pytest.mark.skip(reason="patches, copies or fakes a core class: runs in the GANNET_PURE=1 pass")
    for item in items:
        if "pure" in item.keywords:
            item.add_marker(skip)
