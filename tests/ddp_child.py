"""Child of tests/test_distributed.py: BC of a tiny blind policy on one recorded episode, run as
one process or under torchrun. Usage: ddp_child.py DATA OUT STEPS TOTAL_STEPS"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class FullChunks:
    """The samples whose whole action chunk is valid (every loss a mean over equal counts)."""

    def __init__(self, data) -> None:
        import numpy as np

        self.data = data
        self.sizes: list[int] = []
        self.rows = np.array([i for i in range(len(data)) if bool(data.batch(np.array([i])).action_mask.all())])

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices):
        self.sizes.append(len(indices))
        return self.data.batch(self.rows[indices])


def main(data_dir: str, out: str, steps: int, total: int) -> None:
    import torch

    from methods.bc import BCConfig, BCMethod
    from sim.storage import read_episodes
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset
    from vla.distributed import is_main
    from vla.policy import VLAPolicy, default_action_tokenizer
    from vla.train_loop import TrainConfig, train

    torch.set_num_threads(1)
    config = PolicyConfig(**SIZES["tiny"], cameras=False)
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    data = DemoDataset(policy, augment_commands=0.0)
    for ep in read_episodes(data_dir, load_frames=False):
        data.add_episode(ep)
    method = BCMethod(policy, BCConfig(lr=1e-3, total_steps=total, warmup_steps=2))
    source = FullChunks(data)
    train(method, source, TrainConfig(steps=steps, batch_size=8, log_every=1, checkpoint_every=3, seed=0,
                                                progress=False), Path(out) / "train")
    from vla.distributed import active, world

    ranks = Path(out) / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / str(world()[0])).write_text(f"{world()[1]} {active()} {max(source.sizes)}")  # proof of who trained how
    if is_main():
        policy.save(Path(out) / "policy")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
