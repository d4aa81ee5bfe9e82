"""No pickle from disk anywhere (issue "Reliability", item 4): weights are safetensors, configs
JSON, episodes HDF5; the one torch file (the training state) is read with weights_only=True and
numpy archives with allow_pickle=False. The rollout pool's pickling of loaders between its own
processes is inter-process messaging, not a file, and is the only pickle call allowed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "tokenizers_mm", "vla", "methods", "offline_rl", "benchmarks", "app")
IPC_ONLY = {("vla/parallel.py", "pickle.dumps"), ("vla/parallel.py", "pickle.loads")}


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return ast.unparse(kw.value)
    return None


def test_nothing_unpickles_a_file():
    found, seen = [], set()
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node, func in _calls(path):
                where = f"{rel}:{node.lineno} {func}"
                seen.add((rel, func))
                if func.startswith(("pickle.", "cPickle.", "dill.", "joblib.")) or func.endswith("read_pickle"):
                    if (rel, func) not in IPC_ONLY:
                        found.append(where)
                elif func in ("torch.load",) and _keyword(node, "weights_only") != "True":
                    found.append(where + " without weights_only=True")
                elif func in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") != "False":
                    found.append(where + " without allow_pickle=False")
    assert not found, f"pickle from disk: {found}"
    # the scan reads what it should: the known safe readers are among the calls it saw
    assert {("vla/checkpoint.py", "torch.load"), ("methods/pairs.py", "np.load"), *IPC_ONLY} <= seen
