"""Ownership of layers, losses and optimizers: each belongs to at most one live model."""

from __future__ import annotations

import copyreg
import threading
import weakref

#: per thread, the parts of a model being pickled (:class:`PartsPickling`) that pickle as bare
#: objects its unpickled state fills: ``{id(part): (weakref to the part, weakref to the mark)}``;
#: an entry counts only while its mark lives (the pickler holds it until that pickle ends, however
#: it ends: a pickle that failed between the marks leaves no entry that counts)
_PICKLED_PARTS = threading.local()


def _pickled_parts() -> dict[int, tuple[weakref.ref, weakref.ref]]:
    parts = _PICKLED_PARTS.__dict__.get("parts")
    if parts is None:
        parts = _PICKLED_PARTS.parts = {}
    return parts


def transplantable(obj) -> bool:
    """Whether ``obj`` is all in its ``__dict__`` (no ``__slots__`` of its own) and pickles with
    :meth:`Owned.__reduce_ex__`: a copy may make it another object of its class by moving that
    object's ``__dict__`` into it (a model's copy adopting a part copied before it, in one
    ``copy.deepcopy`` or one pickle)."""
    cls = type(obj)
    reduce_ex: object = cls.__reduce_ex__
    reduce: object = cls.__reduce__
    if reduce_ex is not Owned.__reduce_ex__ or reduce is not object.__reduce__:
        return False  # (its own pickling: left as it is)
    return all_in_dict(obj) and hasattr(obj, "__weakref__")


def all_in_dict(obj) -> bool:
    """Whether ``obj``'s state is all in its ``__dict__`` (no ``__slots__`` of its own in its class
    or a base): moving another object's ``__dict__`` into it makes it that object (a metric of a
    model's copy adopted by the copy of it made in the same ``copy.deepcopy`` or pickle)."""
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        if any(name not in ("__dict__", "__weakref__") for name in ([slots] if isinstance(slots, str) else slots)):
            return False
    return hasattr(obj, "__dict__")


class PartsPickling:
    """A mark in a model's pickled state, before (``entering``) and after its ``parts`` (the layers
    and optimizer that its state rebuilds): pickled, the first makes each part pickle as a bare
    object of its class (the unpickled model fills it, so a part pickled again in the same pickle,
    ``pickle.dumps([model, model.layers[0]])``, is the unpickled model's own); the second ends
    that. A part pickled before its model (or alone) pickles as a free copy. Unpickled, a mark is
    None.

    Parameters
    ----------
    parts : list
        The model's parts (each :func:`transplantable`).
    entering : bool
        Whether the mark begins (True) or ends the parts.
    """

    __slots__ = ("__weakref__", "entering", "parts")

    def __init__(self, parts: list, entering: bool):
        self.parts, self.entering = parts, entering

    def __reduce__(self):
        registry = _pickled_parts()
        if self.entering:
            for key in [key for key, (_, mark) in registry.items() if mark() is None]:
                del registry[key]  # (left by a pickle that failed between its marks: void already)
        for part in self.parts:
            if self.entering:
                registry[id(part)] = (weakref.ref(part), weakref.ref(self))
            elif _registered(registry, part):
                del registry[id(part)]
        return (type(None), ())


def _registered(registry: dict, part) -> bool:
    """Whether ``part`` is registered to pickle bare, by a mark still alive (a pickle under way)."""
    entry = registry.get(id(part))
    return entry is not None and entry[0]() is part and entry[1]() is not None


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

    def __reduce_ex__(self, protocol):
        # inside its model's pickled state (PartsPickling), once: a bare object the model fills
        registry = _pickled_parts()
        if _registered(registry, self):
            del registry[id(self)]
            return (copyreg.__newobj__, (type(self),))
        return super().__reduce_ex__(protocol)
