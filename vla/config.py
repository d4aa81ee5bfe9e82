"""Typed configs of the transformer policy. Parsed at the entry point only, validated here,
dumped as JSON beside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

COMMAND_MODALITIES = ("ipa", "text", "none")
EXECUTION_MODES = ("ensemble", "first", "open_loop")


@dataclass(frozen=True)
class PolicyConfig:
    d_model: int = 128
    """Width of every token embedding and of the transformer."""
    n_layers: int = 4
    """Decoder blocks."""
    n_heads: int = 4
    """Attention heads (d_model must be divisible by it)."""
    mlp_ratio: float = 3.0
    """Hidden width of each block's MLP as a multiple of d_model."""
    horizon: int = 4
    """Actions per predicted chunk (10 Hz steps)."""
    n_bins: int = 64
    """Bins per action dimension; a residual inside the bin is regressed on top."""
    residual_weight: float = 1.0
    """Weight of the in-bin residual loss against the bin cross-entropy."""
    cameras: bool = True
    """Read the 6-camera surround rig; False = state tokens only (a faster, blind policy)."""
    camera_width: int = 96
    """Camera image width in pixels (the rig's)."""
    camera_height: int = 64
    """Camera image height in pixels (the rig's)."""
    camera_patch: int = 32
    """Square patch size of the camera tokenizer; must divide width and height."""
    command: str = "ipa"
    """How the passenger's command is heard: 'ipa' phonemes of the spoken phrasing, 'text' bytes
    of it, or 'none' (an unconditioned policy)."""
    max_command_tokens: int = 64
    """Command tokens kept (longer commands are cut, never silently: a warning is counted)."""
    execution: str = "ensemble"
    """select_action: 'ensemble' = re-plan every step and average the overlapping chunk
    predictions with exponential weights (ACT's temporal ensembling); 'first' = re-plan every
    step and execute the first action; 'open_loop' = execute whole chunks."""
    ensemble_decay: float = 0.5
    """Temporal ensembling weight exp(-decay * age) of a chunk's prediction made `age` steps ago."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: 'sdpa', 'eager' or 'flash_attention_2' (GPU only)."""
    backbone_dir: str = ""
    """A local directory with a pretrained Llama-family decoder (``save_pretrained`` output) to
    start from instead of random weights; its hidden size must equal d_model."""

    def __post_init__(self) -> None:
        positive = ("d_model", "n_layers", "n_heads", "horizon", "camera_width", "camera_height",
                    "camera_patch", "max_command_tokens")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"PolicyConfig.d_model {self.d_model} must split into {self.n_heads} heads "
                             "of even size")
        if self.n_bins < 2:
            raise ValueError(f"PolicyConfig.n_bins must be >= 2, got {self.n_bins}")
        if self.mlp_ratio <= 0 or self.residual_weight < 0 or self.ensemble_decay < 0:
            raise ValueError("PolicyConfig.mlp_ratio must be > 0, residual_weight and ensemble_decay >= 0")
        if self.camera_width % self.camera_patch or self.camera_height % self.camera_patch:
            raise ValueError(f"PolicyConfig.camera_patch {self.camera_patch} must divide "
                             f"{self.camera_width}x{self.camera_height}")
        if self.command not in COMMAND_MODALITIES:
            raise ValueError(f"PolicyConfig.command must be one of {COMMAND_MODALITIES}, got {self.command!r}")
        if self.execution not in EXECUTION_MODES:
            raise ValueError(f"PolicyConfig.execution must be one of {EXECUTION_MODES}, got {self.execution!r}")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"PolicyConfig.attn_implementation {self.attn_implementation!r} is not "
                             "'sdpa', 'eager' or 'flash_attention_2'")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> PolicyConfig:
        known = {f.name for f in fields(PolicyConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields {unknown}")
        return PolicyConfig(**d)
