"""The contract every adapter layer follows.

An adapter layer wraps one frozen ``nn.Linear`` (``base_layer``) and adds a trainable update. Every
tensor that belongs to the adapter (trainable or not) is registered under a name that starts with
``ADAPTER_PREFIX``: freezing, saving, loading and counting all key off that prefix, so a new method
only has to name its tensors accordingly.

Shapes follow ``torch.nn.Linear``: ``W0`` is ``(d_out, k_in)``, inputs are ``(..., k_in)``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

ADAPTER_PREFIX = "adapter_"


class AdapterError(ValueError):
    """An adapter cannot be built as asked. The message names the module, the shape and the rule."""


def require(condition: bool, module: str, shape: tuple[int, int], rule: str) -> None:
    """Raise an ``AdapterError`` naming module, shape and the broken rule unless ``condition`` holds."""
    if not condition:
        d_out, k_in = shape
        raise AdapterError(f"module '{module}' (Linear {k_in}->{d_out}, weight {d_out}x{k_in}): {rule}")


class AdapterLayer(nn.Module, abc.ABC):
    """Base class: ``y = base_layer(x) + adapter_forward(x)`` unless the update is merged.

    Subclasses set ``method`` and implement ``adapter_forward``, ``delta_weight`` and
    ``trainable_count`` (the closed-form parameter count of SPEC §2, checked by the tests).
    ``validate`` is a classmethod so ``inject`` can reject bad hyperparameters for every target
    before it touches the model. The default ``merge``/``unmerge`` add and subtract
    ``delta_weight()``; a method whose update depends on ``W0`` (DoRA, MiSS bat) must override
    ``unmerge`` (and ``merge`` where needed) so that unmerging restores ``W0`` exactly.
    """

    method: ClassVar[str]

    def __init__(self, base_layer: nn.Linear, module_name: str = "") -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise AdapterError(f"module '{module_name}' is {type(base_layer).__name__}, not nn.Linear")
        self.base_layer = base_layer
        self.module_name = module_name
        self.merged = False
        self.hyper: dict[str, Any] | None = None     # every hyperparameter, set by ``inject`` (for saving)
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ shape helpers
    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    # ------------------------------------------------------------------ to implement
    @classmethod
    def validate(cls, module_name: str, d_out: int, k_in: int, **hyper: Any) -> None:
        """Raise ``AdapterError`` if ``hyper`` cannot be applied to a ``d_out x k_in`` layer."""

    @classmethod
    def shared_state(cls, targets: list[tuple[str, nn.Linear]], **hyper: Any) -> nn.Module | None:
        """Tensors shared by all layers of one ``inject`` call (VeRA's projections, MoS's pool).

        When this returns a module, ``inject`` passes it to every layer as ``shared=``; the layers
        hold references to the same tensors, so each shared parameter is trained and counted once.
        """
        return None

    def bind_shared(self, shared: nn.Module, owned: bool) -> None:
        """Give the layer access to ``shared`` as ``self.adapter_shared``.

        A layer built alone owns its shared tensors (registered here, saved with the layer). Under
        ``inject`` the first adapted layer owns them and the others keep a plain reference, so state
        dicts hold one copy and ``model.to()`` moves them once, whatever container the model is.
        """
        if owned:
            self.__dict__.pop("adapter_shared", None)
            self.add_module("adapter_shared", shared)
        else:
            self.__dict__["adapter_shared"] = shared

    @classmethod
    @abc.abstractmethod
    def trainable_count(cls, d_out: int, k_in: int, **hyper: Any) -> int:
        """Trainable parameters this method adds to one ``d_out x k_in`` layer (SPEC §2)."""

    @abc.abstractmethod
    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update's contribution to the output, ``ΔW x``, computed without forming ``ΔW``."""

    @abc.abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """The dense update ``ΔW`` (``d_out x k_in``) that ``merge`` adds to the frozen weight."""

    # ------------------------------------------------------------------ shared behaviour
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        return result + self.adapter_forward(x).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``base_layer.weight`` so inference costs nothing extra."""
        if self.merged:
            return
        w = self.base_layer.weight
        w.add_(self.delta_weight().to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge``: subtract the same update so training can continue."""
        if not self.merged:
            return
        w = self.base_layer.weight
        w.sub_(self.delta_weight().to(w.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"method={self.method}, in={self.in_features}, out={self.out_features}, merged={self.merged}"
