"""Ownership of layers, losses and optimizers: each belongs to at most one live model."""

from __future__ import annotations

import weakref


class Owned:
    """Mixin: the model this object belongs to, held weakly (a model that is gone frees it).
    Copies (``copy.deepcopy``, pickling) belong to no model: ``__getstate__`` drops the owner."""

    @property
    def owner(self):
        """The live model this object belongs to, or None."""
        ref = self.__dict__.get("_owner")
        return None if ref is None else ref()

    def set_owner(self, model) -> None:
        """Record ``model`` (weakly) as this object's owner."""
        object.__setattr__(self, "_owner", weakref.ref(model))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_owner", None)  # a copy belongs to no model (and a weak reference does not pickle)
        return state
