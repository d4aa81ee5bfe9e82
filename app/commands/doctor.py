"""``vla doctor PATH``: check a run, dataset, checkpoint or D4RL file and list EVERY problem
found, changing nothing (issue "Reliability", item 7).

What it recognizes, anywhere under PATH (a DAgger run holds all of them):

* a policy checkpoint (``policy.json`` + ``model.safetensors``): loads it as ``vla eval`` would;
* an episode dataset (a folder with ``episodes/``): ``dataset.json`` and every episode file,
  read as training reads them (without frames);
* a training run's checkpoints (``checkpoints/step_*``): each has its config, loop state and
  method state, and the loop state parses;
* a D4RL file (``*.h5`` / ``*.npz`` given as PATH, or beside a dataset): loaded and validated;
* JSON files of a run (``*.json``, ``*.jsonl``): parse.

Prints one line per thing checked (``ok`` or ``BAD`` with the reason) and a summary; exit code 0
when everything is fine, 1 when something is not, 2 when PATH does not exist.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla.errors import VLAError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run, dataset or checkpoint directory, or a D4RL file")


def _problem(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_checkpoint(path: Path) -> str | None:
    import offline_rl.policy  # noqa: F401  registers the offline-RL MLP checkpoint kind
    from vla.policies_registry import load_checkpoint

    try:
        load_checkpoint(str(path))
    except Exception as e:  # every way a checkpoint can be damaged is a finding, not a crash
        return _problem(e)
    return None


def _check_dataset(path: Path) -> list[tuple[Path, str | None]]:
    from sim.storage import episode_paths, read_episode

    try:
        paths = episode_paths(path)
    except Exception as e:
        return [(path, _problem(e))]
    found = []
    for p in paths:
        try:
            read_episode(p, load_frames=False)
            found.append((p, None))
        except Exception as e:
            found.append((p, _problem(e)))
    return found


def _check_train_checkpoint(path: Path) -> str | None:
    from vla.checkpoint import CONFIG_FILE, LOOP_FILE, METHOD_FILE

    missing = [n for n in (CONFIG_FILE, LOOP_FILE, METHOD_FILE) if not (path / n).is_file()]
    if missing:
        return f"missing {missing}"
    for name in (CONFIG_FILE, LOOP_FILE):
        try:
            json.loads((path / name).read_text())
        except ValueError as e:
            return f"{name}: not readable as JSON ({_problem(e)})"
    return None


def _check_d4rl(path: Path) -> str | None:
    from offline_rl.datasets import load_d4rl

    try:
        load_d4rl(path)
    except Exception as e:
        return _problem(e)
    return None


def _check_json(path: Path) -> str | None:
    try:
        text = path.read_text()
        if path.suffix == ".jsonl":
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError as e:
                        return f"line {i}: {_problem(e)}"
        else:
            json.loads(text)
    except (OSError, ValueError) as e:
        return _problem(e)
    return None


def diagnose(root: Path) -> list[tuple[str, Path, str | None]]:
    """(kind, path, problem or None) for everything recognized under ``root``."""
    if root.is_file():
        if root.suffix in (".h5", ".hdf5", ".npz"):
            return [("d4rl", root, _check_d4rl(root))]
        if root.suffix in (".json", ".jsonl"):
            return [("json", root, _check_json(root))]
        return [("file", root, "not a run, dataset, checkpoint or D4RL file")]
    found: list[tuple[str, Path, str | None]] = []
    dirs = [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))]
    for d in dirs:
        if d.parent.name == "episodes":
            continue
        if (d / "policy.json").is_file() or (d / "model.safetensors").is_file():
            found.append(("checkpoint", d, _check_checkpoint(d)))
        if (d / "episodes").is_dir():
            found += [("episode", p, problem) for p, problem in _check_dataset(d)]
        if d.name.startswith("step_") and d.parent.name == "checkpoints":
            found.append(("train state", d, _check_train_checkpoint(d)))
        for f in sorted(d.glob("*")):
            if not f.is_file() or f.name.startswith(".") or d.name == "episodes":
                continue
            if f.suffix in (".json", ".jsonl") and f.name != "policy.json":
                found.append(("json", f, _check_json(f)))
            elif f.suffix in (".h5", ".hdf5", ".npz") and d.name != "episodes":
                found.append(("d4rl", f, _check_d4rl(f)))
    return found


def run(args: argparse.Namespace) -> int:
    root = Path(args.path)
    if not root.exists():
        raise VLAError(f"{root} does not exist")
    found = diagnose(root)
    if not found:
        print(f"{root}: nothing recognized (no checkpoint, dataset, training state, D4RL or JSON file)")
        return 1
    bad = [(k, p, why) for k, p, why in found if why]
    for kind, path, why in found:
        if why or kind != "episode":  # healthy episodes are counted, not listed one by one
            print(f"{'BAD' if why else 'ok '}  {kind:<11} {path}" + (f": {why}" if why else ""))
    episodes = [f for f in found if f[0] == "episode"]
    if episodes:
        print(f"episodes: {len(episodes) - sum(1 for f in episodes if f[2])} of {len(episodes)} readable")
    print(f"{len(found)} checked, {len(bad)} with problems" + ("" if bad else ": all fine"))
    return 1 if bad else 0
