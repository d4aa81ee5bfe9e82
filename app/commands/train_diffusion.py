"""``vla train diffusion``: the transformer policy with a diffusion action head
(``vla.diffusion_head``), cloned on recorded datasets (``vla collect``).

The same run as ``vla train bc --head diffusion``: the shared training loop
(``vla.train_loop``, resumable), AdamW with warm-up + cosine decay (``methods.bc``), the
noise-prediction loss of the head, and an EMA of the weights saved in the policy checkpoint and
used for inference. Evaluate the result with ``vla eval --policy OUT/policy``; time it against
the binned head with ``vla bench diffusion --policy OUT/policy``.
"""

from __future__ import annotations

import argparse

from app.commands.train import add_dataset_train_args, run_train_policy


def configure(p: argparse.ArgumentParser) -> None:
    add_dataset_train_args(p, head="diffusion")


def run(args: argparse.Namespace) -> int:
    return run_train_policy(args)
