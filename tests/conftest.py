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


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_codec():
    """A tiny codec (2 codebooks of 64) whose codebooks are k-means-initialized on six rendered
    spoken commands: the audio tests' codec (seconds to build, never trained)."""
    import numpy as np
    import torch

    from tokenizers_mm import audio_command, corpus
    from tokenizers_mm.codec import AudioCodec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codec = AudioCodec.small(seed=0, num_filters=4, hidden_size=16, codebook_size=64, target_bandwidths=[0.9])
        rng = np.random.default_rng(0)
        specs = [audio_command.draw_rendition(p, rng) for p in corpus.PHRASINGS[:6]]
        codec.init_codebooks([corpus.render_item(s)[1].astype(np.float32) / 32768.0 for s in specs], seed=0, iters=5)
    finally:
        torch.set_num_threads(threads)
    return codec


@pytest.fixture(scope="session")
def light_episode(tmp_path_factory):
    """A dataset of one expert episode (highway, light traffic, no cameras), recorded once per
    test session by ``vla collect``; tests only read it."""
    from app import cli

    root = tmp_path_factory.mktemp("light_episode")
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "1", "--cameras", "none",
                     "--out", str(root / "data")]) == 0
    return root / "data"


TONES = {"m": 300.0, "a": 1200.0, "s": 4000.0}
"""Three synthetic 'phones' (pure tones) named by IPA inventory symbols (phone recognizer tests)."""


@pytest.fixture(scope="session")
def tone_clip():
    """``tone_clip(rng, symbols)``: float32 24 kHz audio saying ``symbols`` (keys of ``TONES``),
    each a 0.12-0.2 s tone between short silences, under broadband noise (so every mel band varies)."""
    import numpy as np

    sr = 24_000

    def make(rng, symbols):
        parts = [np.zeros(int(0.05 * sr), np.float32)]
        for s in symbols:
            n = int(rng.uniform(0.12, 0.2) * sr)
            parts += [(0.4 * np.sin(2 * np.pi * TONES[s] * np.arange(n) / sr) * np.hanning(n)).astype(np.float32),
                      np.zeros(int(0.05 * sr), np.float32)]
        x = np.concatenate(parts)
        return x + 0.02 * rng.standard_normal(len(x)).astype(np.float32)

    return make


@pytest.fixture
def tiny_plan_policy(tmp_path):
    """make(action="plan", observation="lane_route") -> the directory of a saved tiny VLAPolicy
    with random weights, the same every run (seeded: unseeded, some drove off the road within 4
    steps); ``action="control"`` saves a raw-control one (observation ego_frame)."""

    def make(action: str = "plan", observation: str = "lane_route"):
        import torch

        from vla.config import PolicyConfig
        from vla.policy import VLAPolicy, default_action_tokenizer

        torch.manual_seed(0)
        config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action=action,
                              observation=observation if action == "plan" else "ego_frame")
        out = tmp_path / f"{action}_{observation}"
        VLAPolicy(config, default_action_tokenizer(16, action)).save(out)
        return out

    return make
