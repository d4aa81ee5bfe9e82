"""A standard-control dataset for offline RL: gymnasium's ``Pendulum-v1`` (swing up and hold;
obs ``[cos th, sin th, th_dot]``, torque in [-2, 2], 200 steps, cut by a time limit).

``make_pendulum_dataset`` records a mixture, episode by episode (seed ``seed * 100_000 + i``):
a fraction ``random_fraction`` of the episodes with uniform random torques, the rest with the
energy-pumping controller below plus Gaussian torque noise (std ``noise``, clipped). Every
episode ends by the time limit (``timeouts``), none by failure (``terminals`` all False).

``energy_pumping_action``: with ``E = th_dot^2 / 2 + 15 (cos th - 1)`` (0 upright at rest; the
env's dynamics ``th_ddot = 15 sin th + 3 u``), pump energy with ``u = -E sign(th_dot)`` far from
the top and hold with ``u = -10 th - 2 th_dot`` once ``cos th > 0.85``.

``REFERENCE_RETURNS`` (for the D4RL-style normalized score ``100 (R - R_min) / (R_max -
R_min)``) are the mean returns of the uniform random policy and of the noiseless controller
over seeds 0..99, measured with ``reference_returns()``.
"""

from __future__ import annotations

import numpy as np

from offline_rl.datasets import D4RLData, validate

ENV_ID = "Pendulum-v1"
REFERENCE_RETURNS = {ENV_ID: (-1207.6, -144.7)}
"""env id -> (random policy's mean return, expert controller's mean return)."""


def energy_pumping_action(obs: np.ndarray) -> np.ndarray:
    """The swing-up controller's torque ``(1,)`` for one observation."""
    c, s, w = (float(x) for x in obs)
    if c > 0.85:
        u = -10.0 * np.arctan2(s, c) - 2.0 * w
    else:
        energy = 0.5 * w * w + 15.0 * (c - 1.0)
        u = -energy * (1.0 if w >= 0 else -1.0)
    return np.clip(np.array([u], np.float32), -2.0, 2.0)


def _episode(env, seed: int, policy) -> dict[str, np.ndarray]:
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations",
                                             "terminals", "timeouts")}
    obs, _ = env.reset(seed=seed)
    while True:
        action = policy(obs)
        nxt, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, nxt, terminated, truncated and not terminated)):
            rows[key].append(value)
        obs = nxt
        if terminated or truncated:
            return {k: np.asarray(v) for k, v in rows.items()}


def make_pendulum_dataset(transitions: int = 20_000, seed: int = 0, random_fraction: float = 0.5,
                          noise: float = 0.5) -> D4RLData:
    """About ``transitions`` rows (whole episodes) of the random / controller mixture."""
    import gymnasium as gym

    if transitions < 1 or not 0.0 <= random_fraction <= 1.0 or noise < 0:
        raise ValueError("make_pendulum_dataset: transitions >= 1, random_fraction in [0, 1], noise >= 0")
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    parts, n, i = [], 0, 0
    while n < transitions:
        random_ep = (i % 10) < round(10 * random_fraction)
        if random_ep:
            policy = lambda o: rng.uniform(-2.0, 2.0, 1).astype(np.float32)
        else:
            policy = lambda o: np.clip(energy_pumping_action(o) + rng.normal(0, noise, 1), -2, 2).astype(np.float32)
        part = _episode(env, seed * 100_000 + i, policy)
        parts.append(part)
        n += len(part["rewards"])
        i += 1
    env.close()
    raw = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return validate(raw, f"{ENV_ID} dataset", attrs={"env": ENV_ID, "source": __name__,
                                                      "random_fraction": str(random_fraction),
                                                      "noise": str(noise), "seed": str(seed)})


def reference_returns(episodes: int = 100) -> tuple[float, float]:
    """Mean returns of the random policy and the noiseless controller on seeds 0..episodes-1."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    rng = np.random.default_rng(0)
    random_returns = [_episode(env, i, lambda o: rng.uniform(-2, 2, 1).astype(np.float32))["rewards"].sum()
                      for i in range(episodes)]
    expert_returns = [_episode(env, i, energy_pumping_action)["rewards"].sum() for i in range(episodes)]
    env.close()
    return float(np.mean(random_returns)), float(np.mean(expert_returns))


def main(argv: list[str] | None = None) -> int:
    """``python -m offline_rl.pendulum OUT.h5|OUT.npz [--transitions N] [--seed K]``."""
    import argparse

    from offline_rl.datasets import save_d4rl

    p = argparse.ArgumentParser(prog="python -m offline_rl.pendulum", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="dataset file to write (.h5, .hdf5 or .npz)")
    p.add_argument("--transitions", type=int, default=20_000, help="about this many rows (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    p.add_argument("--random-fraction", type=float, default=0.5, help="random episodes (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.5, help="controller torque noise std (default: %(default)s)")
    args = p.parse_args(argv)
    data = make_pendulum_dataset(args.transitions, args.seed, args.random_fraction, args.noise)
    save_d4rl(args.out, data)
    returns = data.episode_returns()
    print(f"wrote {args.out}: {len(data)} transitions, {len(returns)} episodes, mean return {returns.mean():.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
