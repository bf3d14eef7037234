"""Training memory as a measured quantity, deterministic unlike RSS.

- `SavedTensorMeter`: bytes autograd saves for backward during a forward pass, through
  `torch.autograd.graph.saved_tensors_hooks`, each storage counted once (a view and its base, or
  one tensor saved by two ops, are the same memory) and parameters' storages left out (they are
  resident whatever the method). All saved tensors stay alive until backward, so the sum at the
  end of the forward is the step's peak.
- `OptimizerStateMeter`: bytes held in the optimiser's state (Adam's two moments and step
  counters), read from the real optimiser after each step through torch's global step hook.
- On GPU, `torch.cuda.max_memory_allocated` is recorded beside them.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def _storage(t: torch.Tensor) -> tuple[tuple[str, int], int]:
    try:
        s = t.untyped_storage()
        return (str(t.device), s.data_ptr()), s.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage (sparse, nested)
        return (str(t.device), id(t)), t.numel() * t.element_size()


class SavedTensorMeter:
    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.exclude = {_storage(p)[0] for p in exclude}
        self.seen: dict[tuple[str, int], int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage(t)
        if key not in self.exclude:
            self.seen[key] = max(self.seen.get(key, 0), nbytes)
        return t

    def __enter__(self) -> "SavedTensorMeter":
        self.seen = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())


def saved_bytes(fn: Any, *args: Any, exclude: Iterable[torch.Tensor] = ()) -> tuple[Any, int]:
    """`fn(*args)` under a meter: its result and the bytes it saved for backward."""
    with SavedTensorMeter(exclude) as meter:
        out = fn(*args)
    return out, meter.bytes


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))


class OptimizerStateMeter:
    """The largest optimiser state seen after any step of optimisers over `params` (the core
    builds the optimiser; this watches it without changing it)."""

    def __init__(self, params: Iterable[torch.nn.Parameter]):
        self.ids = {id(p) for p in params}
        self.bytes = 0
        self._handle = register_optimizer_step_post_hook(self._after_step)

    def _after_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if any(id(p) in self.ids for g in opt.param_groups for p in g["params"]):
            self.bytes = max(self.bytes, state_bytes(opt))

    def close(self) -> None:
        self._handle.remove()
