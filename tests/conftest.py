"""Test-session settings shared by every test (and the worker processes they start)."""

from __future__ import annotations

import os

# Episodes draw their command uniformly (sim.highway.EmbeddedDrivingEnv, goals="any") instead of
# first checking with a whole expert episode that the traffic allows it: that check would about
# double the cost of every reset in the suite. tests/test_sim.py tests the feasible draw itself.
os.environ.setdefault("VLA_GOALS", "any")
