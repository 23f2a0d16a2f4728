"""Suite-wide settings."""

from hypothesis import settings

# Property tests check what holds for every example, not how fast one runs:
# on a loaded two-core CI machine a single example can take a second, which
# hypothesis's default 200 ms deadline would report as a failure.
settings.register_profile("gannet", deadline=None)
settings.load_profile("gannet")
