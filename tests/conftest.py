"""Test-session settings shared by every test (and the worker processes they start)."""

from __future__ import annotations

import os

# Episodes draw their command uniformly (sim.highway.EmbeddedDrivingEnv, goals="any") instead of
# first checking with a whole expert episode that the traffic allows it: that check would about
# double the cost of every reset in the suite. tests/test_sim.py tests the feasible draw itself.
os.environ.setdefault("VLA_GOALS", "any")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, by name, on a machine without it."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
