"""Where and how the transformer policy trains: device, precision and compilation.

``--device auto|cpu|cuda|cuda:N``, ``--precision auto|bf16|fp32`` and ``--compile auto|on|off``
resolve to one ``Accel``:

- **device**: ``auto`` is CUDA when torch sees a GPU, else the CPU. Under ``torchrun`` each
  process takes the GPU of its ``LOCAL_RANK``.
- **precision**: ``bf16`` runs the forward pass under ``torch.autocast(dtype=bfloat16)``: matmuls
  and attention in bf16, while norms, softmax statistics and losses stay in fp32. The parameters,
  their gradients and AdamW's moments stay fp32 (the master weights), so there is no loss
  scaling and a checkpoint is the same whatever the precision. ``auto`` = bf16 on a GPU that
  supports it, fp32 on the CPU (bf16 autocast on a CPU is supported: ``--precision bf16``).
- **attention**: the decoder calls ``F.scaled_dot_product_attention``, which picks the flash or
  memory-efficient kernel on a GPU by itself; ``--attn flash_attention_2`` (``vla.options``)
  uses the flash-attn package when it is installed.
- **optimizer**: AdamW with ``fused=True`` on CUDA (one kernel for all parameters), the
  per-parameter loop on the CPU. Both keep the same state, so a checkpoint moves between them.
- **compile**: ``on`` compiles the training loss (forward and backward, torch.compile / inductor;
  the weights and their names stay the same). ``auto`` = on for CUDA, off on the CPU, where the
  compile time was not measured against its gain; a compile that fails falls back to eager with
  the compiler's warning.

None of these change what is computed beyond float rounding, so a run may resume under other
settings (a run started on a GPU continues on a CPU and the other way round). The settings of
the newest segment are recorded in the run's config as ``runtime``, which resume does not
compare (``vla.checkpoint.check_same_config``).
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass

import torch

from vla import distributed
from vla.errors import VLAError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""--device values besides ``cuda:N``."""
PRECISION_CHOICES = ("auto", "bf16", "fp32")
COMPILE_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Accel:
    """Resolved settings (``resolve``)."""

    device: str = "cpu"
    """torch device string: cpu, cuda or cuda:N."""
    precision: str = "fp32"
    """fp32, or bf16 (autocast; fp32 master weights)."""
    compile: bool = False
    """Compile the training loss with torch.compile."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"Accel.device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"Accel.precision must be bf16 or fp32, got {self.precision!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"Accel.compile must be true or false, got {self.compile!r}")

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def autocast(self) -> AbstractContextManager:
        """The forward pass's context: bf16 autocast, or nothing for fp32."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def adamw(self, params, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW over fp32 parameters: fused on CUDA, the per-parameter loop elsewhere."""
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay,
                                 fused=True if self.device_type == "cuda" else None)

    def compiled(self, fn):
        """``fn`` compiled by torch.compile when ``self.compile``, else ``fn`` itself. A compiler
        failure at the first call falls back to eager (torch._dynamo's ``suppress_errors``),
        with the compiler's warning."""
        if not self.compile:
            return fn
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        return torch.compile(fn, dynamic=True)

    def to_dict(self) -> dict:
        return asdict(self)


def cuda_ready() -> bool:
    return torch.cuda.is_available()


def resolve_device(name: str = "auto") -> str:
    """A torch device string for ``--device``; a one-line VLAError for a device that is not here."""
    name = str(name).strip().lower()
    if name not in DEVICE_CHOICES and not re.fullmatch(r"cuda:\d+", name):
        raise VLAError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "cpu" or (name == "auto" and not cuda_ready()):
        return "cpu"
    if not cuda_ready():
        raise VLAError(f"--device {name}: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if name in ("auto", "cuda"):
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if local and local.isdigit() else torch.cuda.current_device()
    else:
        index = int(name.split(":")[1])
    if index >= torch.cuda.device_count():
        raise VLAError(f"--device {name}: cuda:{index} does not exist ({torch.cuda.device_count()} visible)")
    return f"cuda:{index}"


def resolve_precision(name: str, device: str) -> str:
    """bf16 / fp32 for ``--precision`` on ``device``."""
    if name not in PRECISION_CHOICES:
        raise VLAError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {name!r}")
    cuda = device.startswith("cuda")
    if name == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise VLAError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support")
    return name


def resolve(device: str = "auto", precision: str = "auto", compile: str = "auto") -> Accel:
    """The ``Accel`` for the command-line values (``*_CHOICES``)."""
    if compile not in COMPILE_CHOICES:
        raise VLAError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    distributed.use_device(dev)
    on = compile == "on" or (compile == "auto" and dev.startswith("cuda"))
    return Accel(dev, resolve_precision(precision, dev), on)
