"""The layer protocol, the per-call context a forward leaves for its backward, and the
per-batch-size workspaces every layer draws its buffers from."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import types
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from .. import _validation as V
from .. import backend
from .._ownership import Owned

Shape = tuple[int, ...]

#: buffer arenas: the training plans, inference (predict/evaluate/validation), the eager
#: forward()/backward() API and the engine's probes (layer_outputs, loss_and_grads, divergence
#: reports) each write their own buffers, so one never overwrites what another's backward still
#: needs (a predict or a probe between forward and backward cannot change gradients)
ARENAS = ("train", "infer", "eager", "probe")


@dataclass(frozen=True)
class ParamSpec:
    """One trainable parameter of a layer, as :meth:`Layer.parameter_specs` lists it.

    Parameters
    ----------
    name : str
        The parameter's name in the layer (``"weight"``, ``"bias"`` ...).
    shape : tuple of int
        Its shape.
    decay : bool
        Whether weight decay applies to it (weights: yes; biases and norm parameters: no).
    init : callable
        ``init(view, seed, stream)`` fills ``view``, the parameter's view of the model's flat
        parameter buffer (same shape and dtype), from the counter-based RNG.

    Examples
    --------
    >>> from fastnn.layers import ParamSpec
    >>> spec = ParamSpec("weight", (3, 2), True, lambda view, seed, stream: view.fill(0.5))
    >>> w = np.empty(spec.shape, np.float32); spec.init(w, 0, 0); w[0]
    array([0.5, 0.5], dtype=float32)
    """

    name: str
    shape: tuple[int, ...]
    decay: bool
    init: Callable[[np.ndarray, int, int], None]


class Context:
    """What one forward of one layer leaves for its backward.

    ``training`` (the mode of that forward) and ``arena`` (whose buffers it wrote, one of
    :data:`ARENAS`) are set by the caller; the layer saves what its backward needs as attributes
    (``ctx.x = x``) and reads them back in ``backward_calls``. Composite layers keep one child
    context per sub-layer (:meth:`child`). Backward reads only its context, never state left on
    the layer by another call.

    ``lengths``: for sequence input (batch, time, ...), None (every step is valid) or an int64
    array (batch,) of the number of valid leading steps of each sample (padding at the end, as
    torch's ``pack_padded_sequence`` with ``batch_first=True``); a buffer whose values the step
    fills, so plans may pass it to kernels. Layers read it according to their
    :attr:`Layer.lengths_policy`. ``step_rows``: None, or ``(lengths, per_sample, per_step)`` on the
    context of a layer inside ``TimeDistributed`` (at any depth: child contexts inherit it) whose
    batch rows come from padded sequences: ``per_sample`` rows per sample, ``per_step`` per step
    (``kernels.masking.row_is_valid``); BatchNorm then takes its statistics over the valid steps' rows.

    Parameters
    ----------
    training : bool
        The mode of the forward.
    arena : str, default "train"
        Whose buffers the forward writes, one of :data:`ARENAS`.
    lengths : ndarray, optional
        int64 ``(batch,)`` valid steps per sample, for sequence input with padding.

    Examples
    --------
    >>> from fastnn.layers import Context
    >>> ctx = Context(training=False, arena="infer")
    >>> ctx.x = "what backward will need"
    >>> ctx.child(0).arena, ctx.child(0) is ctx.child(0)
    ('infer', True)
    """

    def __init__(self, training: bool, arena: str = "train", lengths=None):
        self.training = bool(training)
        self.arena = arena
        self.lengths = lengths
        self.step_rows: tuple | None = None
        self.children: dict = {}

    def child(self, key) -> Context:
        """The context of a sub-layer (created on first use; it sees the same mode, arena, lengths and
        ``step_rows``).

        Parameters
        ----------
        key : hashable
            The sub-layer's key (its index or name).

        Returns
        -------
        Context
            The child's context, the same object for the same key.

        Examples
        --------
        >>> from fastnn.layers import Context
        >>> ctx = Context(training=True, arena="eager")
        >>> block = ctx.child("block")
        >>> block.training, block.arena, block is ctx.child("block")
        (True, 'eager', True)
        """
        ctx = self.children.get(key)
        if ctx is None:
            ctx = self.children[key] = Context(self.training, self.arena, self.lengths)
            ctx.step_rows = self.step_rows
        return ctx


class Workspace:
    """Named per-sample buffers, allocated once per arena at the largest batch seen.

    Each buffer has shape ``(batch, *trailing)``; calls hand out contiguous row views, memoised
    per (arena, batch size), so steady-state steps allocate nothing.

    Parameters
    ----------
    dtype : dtype-like
        The buffers' dtype.
    device : {"cpu", "cuda"}, default "cpu"
        Where they live: NumPy arrays or CUDA device arrays.
    **trailing : tuple of int
        One buffer per keyword: its per-sample shape (``()`` gives one value per sample).

    Examples
    --------
    >>> from fastnn.layers import Workspace
    >>> ws = Workspace("float32", y=(4,), count=())
    >>> views = ws(8)                      # batch 8 in the "train" arena
    >>> views["y"].shape, views["count"].shape, views["y"].dtype
    ((8, 4), (8,), dtype('float32'))
    >>> ws(3)["y"].base is views["y"].base  # a smaller batch reuses the buffer
    True
    """

    def __init__(self, dtype, device: str = "cpu", **trailing: tuple[int, ...]):
        self.dtype = np.dtype(dtype)
        self.device = device
        self.trailing = trailing
        self._capacity: dict[str, int] = {}
        self._full: dict[str, dict[str, np.ndarray]] = {}
        self._views: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def __call__(self, batch: int, arena: str = "train") -> dict[str, np.ndarray]:
        views = self._views.get((arena, batch))
        if views is None:
            if batch > self._capacity.get(arena, 0):
                # allocate first: a MemoryError leaves the workspace as it was, still usable
                full = {
                    name: backend.zeros((batch, *shape), self.dtype, self.device)
                    for name, shape in self.trailing.items()
                }
                self._full[arena] = full
                self._capacity[arena] = batch
                for key in [k for k in self._views if k[0] == arena]:
                    del self._views[key]
            full = self._full[arena]
            views = self._views[(arena, batch)] = {name: arr[:batch] for name, arr in full.items()}
        return views

    @property
    def capacity(self) -> int:
        """The largest batch allocated in any arena.

        Examples
        --------
        >>> from fastnn.layers import Workspace
        >>> ws = Workspace("float64", y=(2,))
        >>> _ = ws(5), ws(3, "infer")
        >>> ws.capacity
        5
        """
        return max(self._capacity.values(), default=0)

    def nbytes(self) -> int:
        """The bytes allocated, all arenas together.

        Returns
        -------
        int
            The sum of the full buffers' sizes.

        Examples
        --------
        >>> from fastnn.layers import Workspace
        >>> ws = Workspace("float64", y=(2,))
        >>> _ = ws(5), ws(3, "infer")  # 5 * 2 + 3 * 2 float64 values
        >>> ws.nbytes()
        128
        """
        return sum(arr.nbytes for full in self._full.values() for arr in full.values())


def run_calls(calls) -> None:
    """Run a list of (kernel, args) in order."""
    for fn, args in calls:
        fn(*args)


def rows(x, width: int):
    """``x`` ``(batch, *shape)`` as the 2-D C-contiguous view (batch * prod(shape[:-1]), width) the
    row kernels take (a view, never a copy: workspace buffers are contiguous)."""
    return x.reshape((x.size // width if width else 0, width))


def flat_rows(x):
    """``x`` ``(batch, *shape)`` as the 2-D view (batch, prod(shape))."""
    return x.reshape((x.shape[0], x.size // x.shape[0] if x.shape[0] else 0))


def shape_str(shape) -> str:
    """ "(batch, 3, 28, 28)" for a per-sample shape (3, 28, 28)."""
    return "(batch, " + ", ".join(str(d) for d in shape) + ")"


def _unbound(layer: Layer) -> bool:
    """Whether ``layer`` has parameters and none bound yet (their attributes, or the arrays of
    ``parameter_arrays`` where a layer keeps them, are missing)."""
    specs = layer.parameter_specs()
    if not specs or layer.sublayers():  # a container's parameters are its children's
        return False
    arrays = getattr(layer, "parameter_arrays", None)
    if isinstance(arrays, dict):
        return not arrays
    return any(getattr(layer, spec.name, None) is None for spec in specs)


def check_built_input(layer: Layer, x):
    """``x`` checked for an eager call of the built ``layer`` (``layer.forward(x, training)``): its
    per-sample shape the built one (the kernels size their loops by the built buffers, so another
    shape would read and write out of bounds), a host array converted to the layer's input dtype
    and C order as ``predict`` converts.

    Parameters
    ----------
    layer : Layer
        A built layer.
    x : array_like or device array
        Its input ``(batch, *input_shape)``; the time axis may differ from the built one where the
        layer's :attr:`~Layer.any_steps` says so.

    Returns
    -------
    ndarray or device array
        ``x``, converted when it is a host array of another dtype or layout.

    Raises
    ------
    RuntimeError
        When ``layer`` is not built, or has parameters no model allocated.
    ValueError
        When ``x``'s per-sample shape differs from the built one, naming both.
    TypeError
        When ``x``'s dtype does not convert to the layer's (floats given to an Embedding).

    Examples
    --------
    >>> import fastnn as fnn
    >>> relu = fnn.ReLU()
    >>> _ = relu.build((3,), "float32")
    >>> check_built_input(relu, np.zeros((5, 3))).dtype  # float64 data: converted
    dtype('float32')
    >>> check_built_input(relu, np.zeros((5, 4), np.float32))
    Traceback (most recent call last):
    ...
    ValueError: ReLU() was built for input (batch, 3) but got (batch, 4); ...
    """
    built = layer.input_shape
    if built is None:
        raise RuntimeError(
            f"{layer!r} is not built: put it in a model (Sequential([...], input_shape=...)) or call "
            f"its build(input_shape, dtype) before forward()"
        )
    unbound = [inner for inner in walk_layers([layer]) if _unbound(inner)]
    if unbound:
        raise RuntimeError(
            f"{unbound[0]!r} has no parameters yet: a model allocates them; call forward on a "
            f"model's layer, e.g. Sequential([layer], input_shape=...).layers[0], or use model.forward"
        )
    want = np.dtype(getattr(layer, "input_dtype", None) or layer.dtype)
    if not hasattr(x, "__cuda_array_interface__"):
        x = np.asarray(x)
        if x.dtype != want and not np.can_cast(x.dtype, want, casting="same_kind"):
            raise TypeError(f"{layer!r} takes {want} input, got {x.dtype}, which does not convert to it")
        x = np.ascontiguousarray(x, dtype=want)
    elif x.dtype != want:
        raise TypeError(f"{layer!r} takes {want} input, got a device array of {x.dtype}")
    got = tuple(x.shape[1:])
    fits = len(got) == len(built) and (got[1:] == built[1:] if layer.any_steps else got == built)
    if not fits:
        if layer.any_steps:
            fix = "pass arrays (batch, time, " + ", ".join(map(str, built[1:])) + ")"
        else:
            fix = f"pass arrays {shape_str(built)}, or build a model with input_shape={got}"
        raise ValueError(f"{layer!r} was built for input {shape_str(built)} but got {shape_str(got)}; {fix}")
    return x


#: how alike (:func:`difflib.get_close_matches`'s ratio) the name of a new attribute must be to one
#: of the object's own to be taken for a misspelling of it: one wrong, missing, extra or swapped
#: letter in a name of five letters or more ("trainabel", "momentun", "stop_trainning"), while
#: tags of one's own such as ``note``, ``tag``, ``name``, ``color`` or ``my_data`` are not
CLOSE_NAME_CUTOFF = 0.8


#: the key, in an object's ``__dict__``, of the names of its tags (:func:`keep_as_tag`)
_TAGS = "_user_tags"


def keep_as_tag(obj, name: str) -> None:
    """Remember ``name``, a new attribute set on ``obj`` from outside its own code and not refused
    (:func:`misnamed_attribute`), as a tag of the user's own: :func:`settable_attributes` leaves it
    out, so a later tag is not taken for a misspelling of it (``layer.fold = 1``, then
    ``layer.folds = 5``).

    Parameters
    ----------
    obj : Layer or Sequential
        The object the tag is set on.
    name : str
        The tag's name.

    Examples
    --------
    >>> import fastnn as fnn
    >>> drop = fnn.Dropout(0.5)
    >>> drop.fold = 1  # kept as a tag (Layer.__setattr__ calls keep_as_tag)
    >>> "fold" in settable_attributes(drop)
    False
    """
    obj.__dict__.setdefault(_TAGS, set()).add(name)


def user_tags(obj) -> dict:
    """The user's tags on ``obj`` (:func:`keep_as_tag`) that are still set, ``{name: value}`` in name
    order: what a copy of a model carries over (``Sequential.__getstate__``, as ``copy.deepcopy``
    and pickling of a torch ``nn.Module`` keep its plain attributes).

    Parameters
    ----------
    obj : Layer or Sequential
        The object the tags were set on.

    Returns
    -------
    dict
        Each tag's current value (a deleted tag is left out).

    Examples
    --------
    >>> import fastnn as fnn
    >>> drop = fnn.Dropout(0.5)
    >>> drop.note, drop.fold = "head", 3
    >>> user_tags(drop)
    {'fold': 3, 'note': 'head'}
    """
    held = vars(obj)
    return {name: held[name] for name in sorted(held.get(_TAGS, ())) if name in held}


def settable_attributes(obj) -> set[str]:
    """The public attributes of ``obj`` that code may set: its instance attributes other than the
    user's tags (:func:`keep_as_tag`), and its class's other attributes that are neither methods nor
    read-only properties (the names a new attribute is compared with).

    Parameters
    ----------
    obj : object
        A layer or a model.

    Returns
    -------
    set of str
        The names without a leading underscore.

    Examples
    --------
    >>> import fastnn as fnn
    >>> names = settable_attributes(fnn.Dropout(0.5))
    >>> "p" in names, "trainable" in names  # properties with a setter
    (True, True)
    >>> "build" in names, "owner" in names  # a method, a read-only property
    (False, False)
    """
    tags = vars(obj).get(_TAGS, ())
    names = {key for key in vars(obj) if not key.startswith("_") and key not in tags}
    for klass in type(obj).__mro__[:-1]:
        for key, value in vars(klass).items():
            method = callable(value) or isinstance(value, (classmethod, staticmethod))
            if key.startswith("_") or method or key in names:
                continue
            found = getattr(type(obj), key, None)  # the class's own, where a subclass overrides it
            if not (isinstance(found, property) and found.fset is None):
                names.add(key)
    return names


#: {class: (the lengths of its classes' namespaces, the code objects of its methods and of the
#: functions nested in them)}: :func:`set_by_own_code`'s record, made again when a class changes
_OWN_CODE: weakref.WeakKeyDictionary[type, tuple[tuple[int, ...], frozenset]] = weakref.WeakKeyDictionary()


def _functions_of(value) -> list:
    """The functions a class attribute runs: a function, the one of a static or class method, a
    property's getter, setter and deleter, ``functools.cached_property``'s, each unwrapped
    (``functools.wraps``)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        found = [value.fget, value.fset, value.fdel]
    else:
        found = [value.func if isinstance(value, functools.cached_property) else value]
    functions = []
    for function in found:
        for _ in range(8):  # (a chain of functools.wraps)
            if not isinstance(function, types.FunctionType):
                break
            functions.append(function)
            function = getattr(function, "__wrapped__", None)
    return functions


def _own_code(klass: type) -> frozenset:
    """The code objects of ``klass``'s methods (its bases' too) and of the functions nested in them."""
    mro = klass.__mro__[:-1]
    sizes = tuple(len(vars(k)) for k in mro)
    kept = _OWN_CODE.get(klass)
    if kept is not None and kept[0] == sizes:
        return kept[1]
    codes: set = set()
    pending = [f.__code__ for k in mro for value in vars(k).values() for f in _functions_of(value)]
    while pending:
        code = pending.pop()
        if code not in codes:
            codes.add(code)
            pending.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    own = frozenset(codes)
    _OWN_CODE[klass] = (sizes, own)
    return own


def set_by_own_code(obj, frame) -> bool:
    """Whether the attribute assignment made in ``frame`` is ``obj``'s own code: a method of
    ``obj``'s class (``self.x = ...`` in ``__init__``, ``build``, ``bind``, ``forward``, a property's
    setter, a function nested in one), or a helper function that one of them called with ``obj``
    as its first argument, looking past the ``__setattr__`` of a subclass that passes the
    assignment on to its base. A function of the user's own that takes ``obj`` first
    (``def configure(layer): layer.note = ...``), called from a script or a callback, is code from
    outside: what it sets is checked, and kept as a tag.

    Parameters
    ----------
    obj : object
        The object whose attribute is set.
    frame : frame
        The frame that set it (``inspect.currentframe().f_back`` in ``__setattr__``).

    Returns
    -------
    bool
        True for ``obj``'s own methods; False for code that holds ``obj`` from outside
        (``layer.units = 64`` in a script).

    Examples
    --------
    >>> import inspect
    >>> class Box:
    ...     def here(self):
    ...         return set_by_own_code(self, inspect.currentframe())
    >>> def helper(box):
    ...     return set_by_own_code(box, inspect.currentframe())
    >>> box = Box()
    >>> box.here(), set_by_own_code(box, inspect.currentframe()), helper(box)
    (True, False, False)
    """
    klass = type(obj)
    kept = _OWN_CODE.get(klass)
    while frame is not None:
        code = frame.f_code
        if (kept is not None and code in kept[1]) or code in _own_code(klass):  # (made again if the class changed)
            if code.co_name != "__setattr__":
                return True
        elif not (code.co_argcount > 0 and frame.f_locals.get(code.co_varnames[0]) is obj):
            return False
        # a subclass's __setattr__ passing the assignment on, or a helper given obj: whose call is it?
        frame = frame.f_back
    return False


def new_attribute_from_outside(obj, name: str) -> bool:
    """Whether ``obj.__setattr__`` (the caller) is setting a public attribute ``obj`` does not have
    yet (neither an instance nor a class attribute) from code outside ``obj``'s own methods
    (:func:`set_by_own_code`): the assignments :func:`misnamed_attribute` looks at.

    Parameters
    ----------
    obj : Layer or Sequential
        The object whose ``__setattr__`` calls this.
    name : str
        The attribute being set.

    Returns
    -------
    bool
        False at once for a private or existing name (the common case: no frame is read).
    """
    if name[0] == "_" or name in obj.__dict__ or hasattr(type(obj), name):
        return False
    setattr_frame = inspect.currentframe().f_back  # type: ignore[union-attr]  # obj.__setattr__
    return not set_by_own_code(obj, setattr_frame.f_back)  # type: ignore[union-attr]


def misnamed_attribute(
    obj,
    name: str,
    value,
    *,
    config: Mapping | None = None,
    aliases: Mapping[str, str] | None = None,
    holder: str = "layer",
    ignore: Collection[str] = (),
) -> AttributeError | None:
    """The error for setting the new public attribute ``name`` on ``obj``, when it is a misspelling
    (:data:`CLOSE_NAME_CUTOFF`) of one of ``obj``'s :func:`settable_attributes` or constructor
    arguments, another framework's name of one (``aliases``), or a constructor argument ``obj``
    keeps under another attribute: setting it would store a new attribute that changes nothing
    the object computes. None for any other name (a tag of the user's own, ``layer.note = "..."``).

    Parameters
    ----------
    obj : Layer or Sequential
        The object being changed (``name`` is not one of its attributes yet).
    name : str
        The attribute being set.
    value : object
        The value (shown in the advice).
    config : mapping, optional
        ``obj``'s constructor arguments (a layer's :meth:`~Layer.get_config`).
    aliases : mapping of str to str, optional
        Other frameworks' names of ``obj``'s attributes: ``{their name: fastnn's name}``
        (:attr:`Layer.attribute_aliases`).
    holder : {"layer", "model"}, default "layer"
        What ``obj`` is, as the advice calls it (``set layer.p = 0.2``).
    ignore : collection of str, default ()
        Attributes a misspelling is not looked for in (a model's fixed ones: none sets them).

    Returns
    -------
    AttributeError or None
        The error to raise, naming the class, the attribute, the intended one and the fix.

    Examples
    --------
    >>> import fastnn as fnn
    >>> drop = fnn.Dropout(0.5)
    >>> print(misnamed_attribute(drop, "rate", 0.2, config=drop.get_config(), aliases={"rate": "p"}))
    Dropout has no attribute 'rate' (another framework's name for its 'p'), and setting it would only store a new attribute that changes nothing the layer computes; set layer.p = 0.2 instead, or make a new layer: Dropout(p=0.2)
    >>> print(misnamed_attribute(drop, "note", "the first dropout"))
    None
    """
    config, aliases = dict(config or {}), aliases or {}
    kind = type(obj).__name__
    shown = repr(value)
    if len(shown) > 40 or "\n" in shown:  # an array, a long list: the advice shows the name only
        shown = "..."

    def new_layer(key: str) -> str:
        if len(config) == 1:
            return f"{kind}({key}={shown})"
        return f"{kind}(**{{**{holder}.get_config(), {key!r}: {shown}}})"

    if name in config:
        return AttributeError(
            f"{kind} keeps its {name!r} argument under another attribute, so setting {name!r} would change "
            f"nothing it computes; make a new layer instead: {new_layer(name)}"
        )
    settable = settable_attributes(obj)
    target = aliases.get(name)
    if target is None:
        known = sorted((settable | set(config)) - set(ignore))
        close = difflib.get_close_matches(name, known, n=1, cutoff=CLOSE_NAME_CUTOFF)
        if not close:
            return None
        target = close[0]
        why = f"did you mean {target!r}?"
    elif callable(getattr(type(obj), target, None)):  # another framework's attribute is a method here
        why = f"another framework's way to do what its {target}() does"
    else:
        why = f"another framework's name for its {target!r}"
    fixes = [f"set {holder}.{target} = {shown} instead"] if target in settable else []
    if callable(getattr(type(obj), target, None)):
        fixes.append(f"call {holder}.{target}(...) instead (see help(fnn.{kind}.{target}))")
    if target in config:
        fixes.append(f"make a new layer: {new_layer(target)}")
    advice = ", or ".join(fixes) or f"{target!r} is read-only"
    if name not in aliases:
        advice += f". (For a tag of your own, choose a name further from the {holder}'s attributes.)"
    return AttributeError(
        f"{kind} has no attribute {name!r} ({why}), and setting it would only store a new attribute that "
        f"changes nothing the {holder} computes; {advice}"
    )


def kept_argument_error(layer, name: str, value) -> AttributeError | None:
    """The error for setting ``name``, a constructor argument ``layer`` keeps under another attribute
    (:attr:`Layer.argument_attributes`), to a bool, the argument's kind: the attribute ``name`` holds
    something else (``dense.bias`` the bias array, ``residual.projection`` its projection layer), so
    the value would be ignored or break the build. None for any other setting (``dense.bias = 0``
    writes a one-element bias).

    Parameters
    ----------
    layer : Layer
        The layer being changed.
    name : str
        The attribute being set.
    value : object
        Its new value.

    Returns
    -------
    AttributeError or None
        The error to raise, naming the attribute that keeps the argument and the fix.

    Examples
    --------
    >>> import fastnn as fnn
    >>> print(kept_argument_error(fnn.Dense(3, 2), "bias", False))
    Dense keeps its constructor argument 'bias' as Dense.use_bias; Dense.bias holds something else, so False set there would be ignored; set layer.use_bias = False instead, or make a new layer: Dense(**{**layer.get_config(), 'bias': False})
    >>> print(kept_argument_error(fnn.Dense(3, 2), "bias", np.zeros(2)))  # the bias array itself
    None
    """
    if not isinstance(value, (bool, np.bool_)):
        return None
    kept = [attribute for attribute, argument in type(layer).argument_attributes.items() if argument == name]
    if not kept:
        return None
    kind, flag = type(layer).__name__, bool(value)  # (NumPy's np.True_ shown as True)
    return AttributeError(
        f"{kind} keeps its constructor argument {name!r} as {kind}.{kept[0]}; {kind}.{name} holds something "
        f"else, so {flag!r} set there would be ignored; set layer.{kept[0]} = {flag!r} instead, or make a new layer: "
        f"{kind}(**{{**layer.get_config(), {name!r}: {flag!r}}})"
    )


class Layer(Owned):
    """Base of every layer: the protocol a model drives, and the eager ``forward``/``backward``.

    Shapes are per sample: ``(features,)``, ``(channels, length)``, ``(channels, height, width)``,
    ``(time, features)``. Life cycle:

    1. ``build(input_shape, dtype) -> output_shape`` checks the shape and allocates the layer's
       buffers on ``self.device`` (through :meth:`zeros` / :meth:`workspace`);
    2. the model allocates one flat buffer for all ``parameter_specs()`` and calls
       ``bind(params, grads)`` with views into it;
    3. ``forward_calls(x, ctx) -> (calls, y)``: the kernel calls [(function, args)] computing the
       output ``y`` (a view of this layer's buffers in ``ctx.arena``) from ``x`` (batch,
       ``*input_shape``); what backward needs is saved on ``ctx`` (a ``Context``);
    4. ``backward_calls(grad_y, ctx, need_grad_x) -> (calls, grad_x or None)``: parameter
       gradients are overwritten (not accumulated).

    The model runs the calls directly or records them once per batch size as a plan, so a
    steady-state training step is a flat list of kernel calls. A user layer may instead override
    ``forward(x, training)`` / ``backward(grad_y, need_grad_x)`` with NumPy code (then it keeps its
    own state between them and the model calls it eagerly).

    Devices: ``self.device`` ("cpu" or "cuda") and ``self.K``, that device's kernel namespace
    (:func:`fastnn.backend.kernels`), are set by the model through :meth:`set_device` before
    ``build``; layers take their kernels from ``self.K`` when they build calls.

    A layer belongs to one model (it holds views of that model's buffers); the model refuses a
    layer that already belongs to another live model.

    Attributes: the constructor arguments are attributes of the same name (``dropout.p``), where
    the layer keeps them so, and setting one is checked on a built model. A new attribute set from
    outside the layer's own methods is refused (AttributeError naming the one meant) when its
    name is another framework's for one of the layer's (:attr:`attribute_aliases`, e.g.
    Dropout's ``rate``) or a misspelling of one of its own (``trainabel``); other new names are
    kept as tags of your own (see ``Layer.__setattr__``).

    Examples
    --------
    A layer computed eagerly, outside a model (built by hand: a model builds its layers and
    binds their parameters itself):

    >>> import fastnn as fnn
    >>> relu = fnn.ReLU()
    >>> relu.build((3,), "float32")
    (3,)
    >>> relu.forward(np.array([[-1.0, 0.5, 2.0]], np.float32), training=False)
    array([[0. , 0.5, 2. ]], dtype=float32)
    >>> relu.backward(np.ones((1, 3), np.float32))
    array([[0., 1., 1.]], dtype=float32)
    """

    #: the constructor argument that fixes the input size (named in size-mismatch errors)
    input_argument = "in_features"
    #: the input axis that argument sizes (per sample; -1: the last, 0: channels first)
    feature_axis = -1
    #: "cpu" or "cuda": where the layer's buffers live (set by the model through :meth:`set_device`)
    device = "cpu"
    #: the kernel functions of :attr:`device` (:func:`fastnn.backend.kernels`)
    K = backend.kernels("cpu")
    #: what the layer does with sequence lengths (``ctx.lengths``) arriving with its input:
    #: "keep" (each step is mapped on its own, so padded steps cannot reach valid ones: the output
    #: has the same lengths), "use" (the layer reads ``ctx.lengths``; its output keeps the time axis
    #: and the lengths), "drop" (the layer reads them and its output has no time axis), or None
    #: (it cannot honour them: a model refuses lengths arriving at it)
    lengths_policy: str | None = None
    #: whether an eager forward takes any number of steps (the time axis of its input may differ
    #: from the built one: the recurrent layers)
    any_steps = False
    #: other frameworks' names of this layer's attributes, ``{their name: fastnn's name}``
    #: (``{"rate": "p"}`` on Dropout): setting one raises AttributeError naming fastnn's (see
    #: ``Layer.__setattr__``); each class declares its own
    attribute_aliases: dict[str, str] = {}
    #: constructor arguments the layer keeps under another attribute, ``{attribute: argument}``
    #: (``{"units": "out_features"}`` on Dense): setting the attribute on a built model is checked
    #: as setting the argument (:meth:`fastnn.Sequential.checked_layer_argument`)
    argument_attributes: dict[str, str] = {}
    #: attributes the model may set on a built layer without making its plans stale
    _RUNTIME_ATTRIBUTES = frozenset({"training", "last_output", "last_grad_input", "trainable"})

    def __init__(self):
        self.dtype = None
        self.training = True
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.last_output: np.ndarray | None = None
        self.last_grad_input: np.ndarray | None = None
        self.K = Layer.K  # an instance attribute: found without walking the class hierarchy
        self._eager_ctx: Context | None = None

    def __setattr__(self, name, value):
        """Set an attribute; a new public one set from outside the layer's own code is checked.

        A public name the layer does not have yet (neither an instance nor a class attribute),
        set by code outside the layer's own methods (``layer.units = 64`` in a script; a subclass's
        ``__init__``, ``build`` or ``forward`` sets what it likes), raises AttributeError when it is
        another framework's name of one of the layer's (:attr:`attribute_aliases`), a
        misspelling of one of its attributes or constructor arguments (:data:`CLOSE_NAME_CUTOFF`),
        or a constructor argument it keeps under another attribute: storing it would change
        nothing the layer computes. Other new names (tags of your own) are stored. On a layer of
        a built model, a constructor argument is checked as the constructor checks it, and a
        parameter or buffer is written in place (:meth:`fastnn.Sequential.checked_layer_argument`).

        Parameters
        ----------
        name : str
            The attribute.
        value : object
            Its new value.

        Raises
        ------
        AttributeError
            For a misspelt or foreign name, naming the intended attribute and how to set it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> drop = fnn.Dropout(0.5)
        >>> drop.note = "before the head"  # a tag of your own
        >>> drop.rate = 0.2
        Traceback (most recent call last):
        ...
        AttributeError: Dropout has no attribute 'rate' (another framework's name for its 'p'), ...
        >>> drop.trainabel = False
        Traceback (most recent call last):
        ...
        AttributeError: Dropout has no attribute 'trainabel' (did you mean 'trainable'?), ...
        """
        if new_attribute_from_outside(self, name):
            error = misnamed_attribute(
                self, name, value, config=self._config_or_none(), aliases=type(self).attribute_aliases
            )
            if error is not None:
                raise error
            keep_as_tag(self, name)
        elif isinstance(value, (bool, np.bool_)) and name in type(self).argument_attributes.values():
            error = kept_argument_error(self, name, value)  # (dense.bias = False: use_bias)
            if error is not None:
                raise error
        model = self.owner if name[0] != "_" and name not in Layer._RUNTIME_ATTRIBUTES else None
        # a parameter or buffer of a built model (``dense.weight = w``) is written in place: the
        # attribute is a view of the model's buffers, which a rebuild would bind again
        if model is not None and model.assign_layer_array(self, name, value):
            return
        if model is not None:
            value = model.checked_layer_argument(self, name, value)
        object.__setattr__(self, name, value)
        if model is not None:
            model.layer_changed(self, name)

    def _config_or_none(self) -> dict | None:
        """:meth:`get_config`, or None where a user layer's cannot give it."""
        try:
            return self.get_config()
        except Exception:  # a user layer's get_config that needs what it has not set up
            return None

    @property
    def trainable(self) -> bool:
        """False: the optimizer leaves this layer's parameters, and those of the layers inside it,
        unchanged (no update, no decay, state kept); gradients still flow through it. A BatchNorm
        so frozen (its ``frozen`` property) runs in inference mode in training steps, as in Keras: its
        running statistics normalise and stay unchanged (``fastnn.freezing``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> dense = fnn.Dense(3, 2)
        >>> dense.trainable
        True
        >>> dense.trainable = False  # frozen: fit leaves its weights as they are
        >>> dense.trainable
        False
        """
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        previous = self.trainable
        object.__setattr__(self, "_trainable", V.check_bool(value, "trainable"))
        model = self.owner
        if model is None:
            return
        try:
            model.trainable_changed()
        except BaseException:  # refused (a sparse table the optimizer cannot update): nothing changes
            object.__setattr__(self, "_trainable", previous)
            model.trainable_changed()
            raise

    @property
    def frozen(self) -> bool:
        """Whether the optimizer leaves this layer's parameters unchanged: its own :attr:`trainable`
        is False, or that of a layer containing it in its model (``model.freeze("2")`` freezes
        ``"2.block.0"`` too). A frozen BatchNorm runs in inference mode in training steps.

        Examples
        --------
        >>> import fastnn as fnn
        >>> block = fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3)])
        >>> model = fnn.Sequential([block], input_shape=(3,))
        >>> block.trainable = False
        >>> block.block[1].trainable, block.block[1].frozen
        (True, True)
        """
        if not self.trainable:
            return True
        model = self.owner
        return model is not None and any(frozen for _, layer, frozen in layer_tree(model.layers) if layer is self)

    # -- widths of 1-D layers (the common case) -------------------------------------------
    @property
    def in_features(self) -> int | None:
        """The last axis of the input shape (None before build unless the constructor fixed it).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Dense(4, 2).in_features, fnn.ReLU().in_features
        (4, None)
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((5,), "float32")
        >>> relu.in_features
        5
        """
        fixed = self.__dict__.get("_in_features")
        if self.input_shape is not None:
            return self.input_shape[-1]
        return fixed

    @in_features.setter
    def in_features(self, value) -> None:
        object.__setattr__(self, "_in_features", value)

    @property
    def out_features(self) -> int | None:
        """The last axis of the output shape.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Dense(4, 2).out_features
        2
        """
        if self.output_shape is not None:
            return self.output_shape[-1]
        return self.__dict__.get("_out_features")

    @out_features.setter
    def out_features(self, value) -> None:
        object.__setattr__(self, "_out_features", value)

    def expected_input_shape(self) -> Shape | None:
        """The per-sample input shape this layer's constructor fixes, if any.

        Returns
        -------
        tuple of int or None
            E.g. ``(784,)`` for ``Dense(784, 10)``; a model takes its input shape from it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Dense(784, 10).expected_input_shape(), fnn.ReLU().expected_input_shape()
        ((784,), None)
        """
        width = self.__dict__.get("_in_features")
        return None if width is None else (width,)

    # -- construction -------------------------------------------------------------------
    def set_device(self, device: str) -> None:
        """Use ``device``'s kernels and allocate there from the next ``build`` on; the layers inside
        this one (:meth:`sublayers`) move with it.

        A layer that overrides it calls ``super().set_device(device)``.

        Parameters
        ----------
        device : {"cpu", "cuda"}
            The device (the model calls this; users call ``model.to(device)``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> relu = fnn.ReLU()
        >>> relu.set_device("cpu")
        >>> relu.device, relu.K is fnn.backend.kernels("cpu")
        ('cpu', True)
        >>> block = fnn.Residual([fnn.Dense(3, 3)])
        >>> block.set_device("cpu")  # its block's Dense too
        >>> block.block[0].device
        'cpu'
        """
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "K", backend.kernels(device))
        self.last_output = self.last_grad_input = None
        for _, child in self.sublayers():
            child.set_device(device)

    def zeros(self, shape, dtype=None):
        """A zero array on this layer's device.

        Parameters
        ----------
        shape : int or tuple of int
            The array's shape.
        dtype : dtype-like, optional
            Its dtype; the layer's by default.

        Returns
        -------
        ndarray or numba.cuda device array
            The zeros.

        Examples
        --------
        >>> import fastnn as fnn
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((3,), "float32")
        >>> z = relu.zeros((2, 3))
        >>> z.shape, z.dtype, z.any()
        ((2, 3), dtype('float32'), False)
        """
        return backend.zeros(shape, self.dtype if dtype is None else dtype, self.device)

    def workspace(self, dtype=None, **trailing: tuple[int, ...]) -> Workspace:
        """A :class:`Workspace` on this layer's device.

        Parameters
        ----------
        dtype : dtype-like, optional
            The buffers' dtype; the layer's by default.
        **trailing : tuple of int
            The buffers' per-sample shapes, by name.

        Returns
        -------
        Workspace
            Empty until first called with a batch size.

        Examples
        --------
        >>> import fastnn as fnn
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((3,), "float32")
        >>> y = relu.workspace(y=(3,))(4)["y"]  # batch 4
        >>> y.shape, y.dtype
        ((4, 3), dtype('float32'))
        """
        return Workspace(self.dtype if dtype is None else dtype, self.device, **trailing)

    def build(self, input_shape, dtype):
        """Check the input shape, allocate the layer's buffers, give the output shape.

        The default keeps the shape (elementwise layers).

        Parameters
        ----------
        input_shape : int or tuple of int
            The per-sample input shape (an int ``n`` is ``(n,)``).
        dtype : dtype-like
            float32 or float64: the model's dtype.

        Returns
        -------
        tuple of int
            The per-sample output shape.

        Raises
        ------
        ValueError
            When the layer cannot take that shape (the message names the layer and the shape).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.ReLU().build(4, "float64")
        (4,)
        >>> fnn.Dense(6, 2).build((6,), "float32")
        (2,)
        """
        shape = normalize_shape(input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "output_shape", shape)
        object.__setattr__(self, "dtype", np.dtype(dtype))
        return shape

    def compute_output_shape(self, input_shape) -> Shape:
        """The output shape for ``input_shape``, without building.

        Parameters
        ----------
        input_shape : tuple of int
            A per-sample input shape.

        Returns
        -------
        tuple of int
            The per-sample output shape (the base class knows it only after ``build``).

        Raises
        ------
        NotImplementedError
            When the layer cannot say it before being built with that shape.

        Examples
        --------
        >>> import fastnn as fnn
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((3,), "float32")
        >>> relu.compute_output_shape((3,))
        (3,)
        """
        if self.output_shape is not None and normalize_shape(input_shape) == self.input_shape:
            return self.output_shape
        raise NotImplementedError

    def parameter_specs(self) -> list[ParamSpec]:
        """The trainable parameters the model allocates for this layer (after ``build``).

        The default lists those of the layers inside it (:meth:`sublayers`), each named
        :meth:`child_parameter_prefix` + the child's name, in sublayer order
        (``children_parameter_specs``): empty for a layer without sublayers, the whole list for
        a container. A layer with parameters of its own overrides it; a container that has some
        returns its own first, then ``super().parameter_specs()`` (torch's ``named_parameters``
        order).

        Returns
        -------
        list of ParamSpec
            Weights first; empty for layers without parameters.

        Examples
        --------
        >>> import fastnn as fnn
        >>> dense = fnn.Dense(3, 2)
        >>> _ = dense.build((3,), "float32")
        >>> [(spec.name, spec.shape, spec.decay) for spec in dense.parameter_specs()]
        [('weight', (3, 2), True), ('bias', (2,), False)]
        >>> block = fnn.Residual([fnn.Dense(3, 3, bias=False)])
        >>> _ = block.build((3,), "float32")
        >>> [spec.name for spec in block.parameter_specs()]  # its children's
        ['block.0.weight']
        """
        return children_parameter_specs(self)

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Receive views of the model's flat parameter and gradient buffers.

        The default passes the layers inside this one (:meth:`sublayers`) theirs, named as
        :meth:`parameter_specs` names them (``bind_children``), and ignores the rest. A layer
        with parameters of its own overrides it; a container that has some keeps its own views,
        then calls ``super().bind(params, grads)`` (a model refuses one whose sublayers were left
        unbound).

        Parameters
        ----------
        params : dict of str to ndarray
            Spec name -> view of the parameter buffer, of the spec's shape.
        grads : dict of str to ndarray
            Spec name -> view of the gradient buffer (backward overwrites it).

        Examples
        --------
        Binding by hand (a model binds views of its flat buffers):

        >>> import fastnn as fnn
        >>> dense = fnn.Dense(3, 2)
        >>> _ = dense.build((3,), "float64")
        >>> specs = dense.parameter_specs()
        >>> dense.bind({s.name: np.ones(s.shape) for s in specs}, {s.name: np.zeros(s.shape) for s in specs})
        >>> dense.forward(np.ones((1, 3)), training=False)  # 3 * 1 + 1
        array([[4., 4.]])
        """
        bind_children(self, params, grads)

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model.

        The default gives those of the layers inside this one (:meth:`sublayers`), named as their
        parameters are (``children_buffers``). A container with buffers of its own returns
        ``{**its_own, **super().buffers()}`` (a model refuses one that leaves its sublayers' out).

        Returns
        -------
        dict of str to ndarray
            E.g. batch norm's running statistics, dropout's step counter; live arrays.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Dropout(0.5).buffers(), fnn.Dense(3, 2).buffers()
        ({'step': array([0])}, {})
        >>> fnn.Residual([fnn.Dense(3, 3), fnn.Dropout(0.5)]).buffers()  # its children's
        {'block.1.step': array([0])}
        """
        return children_buffers(self)

    @property
    def parameter_views(self) -> dict[str, np.ndarray]:
        """{spec name: view} of the parameters the layer was last bound to (kept by copies: a
        copy of a trained layer brings its weights into a new model).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,), seed=0)
        >>> views = model.layers[0].parameter_views
        >>> sorted(views), views["weight"].shape
        (['bias', 'weight'], (3, 2))
        """
        return self.__dict__.get("_param_views") or {}

    def keep_parameter_views(self, views: dict[str, np.ndarray]) -> None:
        """Record the views of :meth:`bind` (the model calls it after binding), and check that the
        binding reached the layers inside this one (``check_sublayers_bound``).

        Parameters
        ----------
        views : dict of str to ndarray
            The parameter views given to :meth:`bind`.

        Raises
        ------
        ValueError
            When a container's ``bind`` or ``buffers`` left out the layers inside it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> dense = fnn.Dense(3, 2)
        >>> dense.keep_parameter_views({"bias": np.zeros(2)})
        >>> dense.parameter_views
        {'bias': array([0., 0.])}
        """
        if self.sublayers():
            check_sublayers_bound(self, views)
        object.__setattr__(self, "_param_views", views)

    def sublayers(self) -> list[tuple[str, Layer]]:
        """The layers this one contains (Residual's block ...).

        A layer that holds layers (a container) overrides it, and then gets the rest of the
        protocol for its children from :class:`Layer`, as a torch ``nn.Module`` or a Keras layer
        does: :meth:`parameter_specs`, :meth:`bind`, :meth:`buffers`, :meth:`set_device`,
        :meth:`seed_rng` and :meth:`plannable` pass each call on to them. It still writes its own
        ``build`` (which builds the children), ``forward_calls``/``backward_calls`` (which run them
        with ``ctx.child(key)``) and, to be saved, ``get_config``/``from_config``
        (:func:`fastnn.layers.layer_to_config` and ``layer_from_config`` describe the children).

        Returns
        -------
        list of (str, Layer)
            Name and layer of each direct child; empty for plain layers.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Residual([fnn.Dense(3, 3), fnn.ReLU()]).sublayers()
        [('block.0', Dense(3, 3)), ('block.1', ReLU())]
        >>> fnn.ReLU().sublayers()
        []
        """
        return []

    def child_parameter_prefix(self, child: str) -> str:
        """The prefix this layer's parameter and buffer names give those of its sublayer ``child``
        (the name :meth:`sublayers` gives it): ``"block.0."`` for Residual's first layer, ``""``
        for TimeDistributed's layer, whose parameters keep their own names. A container lists its
        children's parameters under it (``children_parameter_specs``), and freezing finds the
        layer owning each parameter by it (``parameter_owners``).

        Parameters
        ----------
        child : str
            A name from :meth:`sublayers`.

        Returns
        -------
        str
            ``child + "."`` unless the container names its children's parameters otherwise.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Residual([fnn.Dense(3, 3)]).child_parameter_prefix("block.0")
        'block.0.'
        >>> fnn.TimeDistributed(fnn.Dense(3, 3)).child_parameter_prefix("layer")
        ''
        """
        return f"{child}."

    def seed_rng(self, seed: int, stream: int) -> None:
        """Key the random streams of the layers inside this one by the model's seed (the model calls
        it after ``build``): sublayer ``k`` (0-based, :meth:`sublayers` order) gets the stream
        ``stream * 1000 + k + 1``. Layers that draw random numbers (Dropout) override it.

        Parameters
        ----------
        seed : int
            The model's seed.
        stream : int
            A number unique to this layer in the model; each child gets one derived from it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> a, b = (fnn.Residual([fnn.Dense(4, 4), fnn.Dropout(0.5)]) for _ in range(2))
        >>> models = [fnn.Sequential([layer], input_shape=(4,), seed=0) for layer in (a, b)]
        >>> x = np.ones((1, 4), np.float32)
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        True
        >>> b.seed_rng(seed=0, stream=99)  # another stream: other masks
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        False
        """
        for k, (_, child) in enumerate(self.sublayers()):
            child.seed_rng(seed, stream * 1000 + k + 1)

    # -- computation ---------------------------------------------------------------------
    def forward_calls(self, x: np.ndarray, ctx: Context) -> tuple[list, np.ndarray]:
        """The kernel calls computing this layer's output from ``x``.

        Parameters
        ----------
        x : ndarray
            The input, ``(batch, *input_shape)`` of the layer's dtype.
        ctx : Context
            Where this call keeps what its backward needs; ``ctx.arena`` names the buffers to use.

        Returns
        -------
        calls : list of (callable, tuple)
            ``(kernel, args)`` pairs, run in order.
        y : ndarray
            The output view ``(batch, *output_shape)`` the calls fill.

        Examples
        --------
        >>> import fastnn as fnn
        >>> from fastnn.layers import Context
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((3,), "float32")
        >>> ctx = Context(training=False, arena="infer")
        >>> calls, y = relu.forward_calls(np.array([[-1.0, 0.5, 2.0]], np.float32), ctx)
        >>> for kernel, args in calls: kernel(*args)
        >>> y
        array([[0. , 0.5, 2. ]], dtype=float32)
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither forward_calls nor forward")

    def backward_calls(self, grad_y: np.ndarray, ctx: Context, need_grad_x: bool) -> tuple[list, np.ndarray | None]:
        """The kernel calls of the backward of the forward that filled ``ctx``.

        Parameters
        ----------
        grad_y : ndarray
            Gradient of the loss with respect to the output, ``(batch, *output_shape)``.
        ctx : Context
            The context of the matching forward.
        need_grad_x : bool
            Whether the gradient with respect to the input is needed (False for the first layer).

        Returns
        -------
        calls : list of (callable, tuple)
            ``(kernel, args)`` pairs; they overwrite (never accumulate) the parameter gradients.
        grad_x : ndarray or None
            The input gradient view ``(batch, *input_shape)``, or None when not needed.

        Examples
        --------
        >>> import fastnn as fnn
        >>> from fastnn.layers import Context
        >>> relu = fnn.ReLU()
        >>> _ = relu.build((3,), "float32")
        >>> ctx = Context(training=True)
        >>> calls, y = relu.forward_calls(np.array([[-1.0, 0.5, 2.0]], np.float32), ctx)
        >>> back, grad_x = relu.backward_calls(np.ones((1, 3), np.float32), ctx, True)
        >>> for kernel, args in calls + back: kernel(*args)
        >>> grad_x
        array([[0., 1., 1.]], dtype=float32)
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither backward_calls nor backward")

    def output_lengths(self, ctx: Context):
        """The sequence lengths of this layer's output, by :attr:`lengths_policy`.

        Parameters
        ----------
        ctx : Context
            The context of the forward.

        Returns
        -------
        ndarray or None
            int64 ``(batch,)`` valid steps per sample, or None (every step valid, or no time axis).

        Raises
        ------
        ValueError
            When lengths arrive at a layer that cannot honour them.

        Examples
        --------
        >>> import fastnn as fnn
        >>> from fastnn.layers import Context
        >>> ctx = Context(training=False, lengths=np.array([3, 1]))
        >>> fnn.ReLU().output_lengths(ctx)  # "keep": each step on its own
        array([3, 1])
        >>> print(fnn.LSTM(2, 4, return_sequences=False).output_lengths(ctx))  # "drop"
        None
        """
        if ctx.lengths is None or self.lengths_policy in ("keep", "use"):
            return ctx.lengths
        if self.lengths_policy == "drop":
            return None
        raise ValueError(f"{self!r} cannot honour sequence lengths (padded steps would reach valid ones)")

    def plannable(self) -> bool:
        """Whether a model may record this layer's calls in a step plan.

        Returns
        -------
        bool
            True when forward/backward are described by forward_calls/backward_calls, by this
            layer and every layer inside it (:meth:`sublayers`); False for user layers that
            override forward/backward (run eagerly), and for the containers holding one.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Double(fnn.Layer):
        ...     def forward(self, x, training):
        ...         return 2 * x
        >>> fnn.ReLU().plannable(), Double().plannable()
        (True, False)
        """
        cls = type(self)
        own = cls.forward is Layer.forward and cls.backward is Layer.backward
        return own and all(child.plannable() for _, child in self.sublayers())

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Eager forward of this layer alone (in the "eager" arena).

        Parameters
        ----------
        x : ndarray
            ``(batch, *input_shape)`` of the layer's dtype.
        training : bool
            Training mode (dropout on, batch statistics) or evaluation mode.

        Returns
        -------
        ndarray
            ``(batch, *output_shape)``, a view of the layer's buffers (valid until its next call).

        Examples
        --------
        >>> import fastnn as fnn
        >>> tanh = fnn.Tanh()
        >>> _ = tanh.build((2,), "float64")
        >>> tanh.forward(np.array([[0.0, 1.0]]), training=False)
        array([[0.    , 0.7616]])
        """
        return self._run_eager(check_built_input(self, x), Context(training, "eager"))

    def _run_eager(self, x, ctx: Context):
        """The eager forward of ``x``, checked by :func:`check_built_input`, in ``ctx``."""
        calls, y = self.forward_calls(x, ctx)
        run_calls(calls)
        self._eager_ctx = ctx
        self.last_output = y
        return y

    def backward(self, grad_y: np.ndarray, need_grad_x: bool = True) -> np.ndarray | None:
        """Eager backward of the last :meth:`forward` of this layer.

        Parameters
        ----------
        grad_y : ndarray
            ``(batch, *output_shape)``, the loss gradient with respect to the output.
        need_grad_x : bool, default True
            Whether to compute the input gradient.

        Returns
        -------
        ndarray or None
            ``(batch, *input_shape)`` input gradient (None when not asked for); the parameter
            gradients are left in the model's gradient buffer.

        Raises
        ------
        RuntimeError
            When called before :meth:`forward`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> tanh = fnn.Tanh()
        >>> _ = tanh.build((2,), "float64")
        >>> _ = tanh.forward(np.array([[0.0, 1.0]]), training=True)
        >>> tanh.backward(np.ones((1, 2)))  # 1 - tanh(x) ** 2
        array([[1.   , 0.42]])
        """
        if self._eager_ctx is None:
            if type(self).forward is not Layer.forward:  # a user layer's own forward: it brings its backward
                raise NotImplementedError(
                    f"{type(self).__name__} overrides forward but not backward: training needs "
                    f"backward(grad_y, need_grad_x) returning the gradient with respect to its input "
                    f"(and writing its parameter gradients)"
                )
            raise RuntimeError(
                f"{self!r}.backward() was called before forward(); run forward(x, training) "
                f"first, then backward(grad_y)"
            )
        calls, grad_x = self.backward_calls(self._checked_grad(grad_y), self._eager_ctx, need_grad_x)
        run_calls(calls)
        self.last_grad_input = grad_x
        return grad_x

    def _checked_grad(self, grad_y):
        """``grad_y`` of the shape of the last eager output (a host array converted to its dtype)."""
        out = self.last_output
        if out is None or hasattr(grad_y, "__cuda_array_interface__"):
            return grad_y
        grad_y = np.ascontiguousarray(grad_y, dtype=out.dtype)
        if grad_y.shape != out.shape:
            raise ValueError(
                f"grad_y of {self!r} must have the shape of its last forward's output {out.shape}, got {grad_y.shape}"
            )
        return grad_y

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_owner", None)  # a copy belongs to no model
        state.pop("_eager_ctx", None)
        state.pop("K", None)  # kernels are found again from the device
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_eager_ctx"] = None
        self.__dict__["K"] = backend.kernels(self.__dict__.get("device", "cpu"))

    # -- description --------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments that rebuild this layer (saved with the model).

        Returns
        -------
        dict
            JSON-able keyword arguments: ``type(layer)(**layer.get_config())`` is an equal layer.

        Examples
        --------
        >>> import fastnn as fnn
        >>> config = fnn.Dropout(0.25).get_config()
        >>> config, fnn.Dropout(**config)
        ({'p': 0.25}, Dropout(p=0.25))
        """
        return {}

    def extra_repr(self) -> str:
        """The arguments shown by ``repr(layer)``.

        Returns
        -------
        str
            ``"key=value, ..."`` from :meth:`get_config`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Dropout(0.25).extra_repr()
        'p=0.25'
        """
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def non_default_arguments(layer: Layer, shown=()) -> list[str]:
    """``"name=value"`` for each :meth:`~Layer.get_config` entry of ``layer`` not in ``shown`` that
    is not at its default, for ``repr`` (so two layers of different configurations print apart).

    An entry is at its default when a layer made from the rest of the configuration holds the
    same value: defaults that follow from other arguments (the initialiser an activation picks,
    a pool's stride) count as defaults.

    Parameters
    ----------
    layer : Layer
        A layer whose class takes ``get_config()`` as keyword arguments.
    shown : iterable of str, default ()
        Entries the caller prints itself.

    Returns
    -------
    list of str
        In ``get_config()`` order.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.layers.base import non_default_arguments
    >>> dense = fnn.Dense(3, 2, activation="leaky_relu", negative_slope=0.3, bias=False)
    >>> non_default_arguments(dense, shown=("in_features", "out_features", "activation"))
    ['bias=False', 'negative_slope=0.3']
    """
    import warnings

    config, shown = layer.get_config(), set(shown)
    out = []
    for key, value in config.items():
        if key in shown:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                default = type(layer)(**{k: v for k, v in config.items() if k != key}).get_config().get(key)
            same = default == value
        except (TypeError, ValueError):  # the key is required, or the others need it as it is
            same = False
        if not same:
            out.append(f"{key}={value!r}")
    return out


def width_mismatch(layer: Layer, shape, owner: str = "its") -> str | None:
    """What is wrong when ``layer`` receives per-sample ``shape``, by the input size its
    constructor fixes on its :attr:`~Layer.feature_axis` (as a model checks its layers).

    Parameters
    ----------
    layer : Layer
        The receiving layer (unbuilt).
    shape : tuple of int
        The per-sample shape it receives.
    owner : str, default "its"
        Who owns the argument in the advice (a model says "layer 2's").

    Returns
    -------
    str or None
        ``"expects 3 features on the channel axis; set its num_features to 4"``, or None when
        the sizes agree or the constructor fixes none.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.layers.base import width_mismatch
    >>> print(width_mismatch(fnn.BatchNorm2d(2), (2, 4, 5)))  # channels first: axis 0
    None
    >>> width_mismatch(fnn.Dense(3, 2), (4,))
    'expects 3 features on the last axis; set its in_features to 4'
    """
    expected = layer.expected_input_shape()
    axis = layer.feature_axis
    if expected is None or not -len(shape) <= axis < len(shape) or expected[-1] == shape[axis]:
        return None
    where = "the last axis" if axis in (-1, len(shape) - 1) else "the channel axis"
    return f"expects {expected[-1]} features on {where}; set {owner} {layer.input_argument} to {shape[axis]}"


def refuse_user_child(container: Layer, child: Layer, where: str) -> None:
    """Refuse a layer with its own NumPy ``forward``/``backward`` inside ``container`` (a Residual's
    block, TimeDistributed): containers run their children's recorded kernel calls.

    Parameters
    ----------
    container : Layer
        The layer that holds ``child``.
    child : Layer
        The layer inside it.
    where : str
        How the error names the child's place (``"block layer 0"``).

    Raises
    ------
    NotImplementedError
        When ``child`` (or a layer inside it) is not plannable.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.layers.base import refuse_user_child
    >>> refuse_user_child(fnn.Residual([fnn.ReLU()]), fnn.ReLU(), "block layer 0")  # built-in: fine
    """
    if not child.plannable():
        kind = type(container).__name__
        raise NotImplementedError(
            f"{kind}: {where} ({child!r}) runs its own NumPy forward/backward, which a {kind} cannot "
            f"hold (it runs its layers' recorded kernel calls); put that layer outside the {kind}"
        )


def layer_tree(layers, prefix: str = "", frozen: bool = False):
    """Every layer of ``layers`` and, depth first, the layers inside them, as ``(path, layer,
    frozen)``: the path is the layer's index in ``layers`` and its :meth:`Layer.sublayers` names
    (``"2"``, ``"2.block.0"``, the paths ``model.freeze`` takes) and ``frozen`` the one rule of
    freezing: the layer's own ``trainable`` is False, or that of a layer containing it (so a
    ``trainable = True`` layer inside a frozen container is frozen, as in Keras). :attr:`Layer.frozen`
    and ``fastnn.freezing`` both read it.

    Parameters
    ----------
    layers : list of Layer
        The model's layers (or a container's ``[child for _, child in sublayers()]``).
    prefix : str, default ""
        Put before each path.
    frozen : bool, default False
        Whether a container above ``layers`` is frozen.

    Yields
    ------
    tuple of (str, Layer, bool)
        Path, layer and whether it is frozen, parents before their children.

    Examples
    --------
    >>> import fastnn as fnn
    >>> block = fnn.Residual([fnn.Dense(3, 3)])
    >>> block.trainable = False
    >>> [(path, frozen) for path, _, frozen in layer_tree([fnn.ReLU(), block])]
    [('0', False), ('1', True), ('1.block.0', True)]
    """
    for i, layer in enumerate(layers):
        yield from _subtree(f"{prefix}{i}", layer, frozen)


def _subtree(path: str, layer: Layer, frozen: bool):
    here = frozen or not layer.trainable
    yield path, layer, here
    for name, child in layer.sublayers():
        yield from _subtree(f"{path}.{name}", child, here)


def parameter_owners(layer: Layer) -> dict[str, tuple[Layer, str]]:
    """The layer that owns each parameter of ``layer``: ``{name in layer.parameter_specs():
    (owner, the owner's name for it)}``, the owner ``layer`` itself or a layer inside it, whose
    names reach ``layer``'s through :meth:`Layer.child_parameter_prefix`.

    Parameters
    ----------
    layer : Layer
        A built layer.

    Returns
    -------
    dict of str to (Layer, str)
        One entry per parameter of ``layer``.

    Raises
    ------
    ValueError
        If a container does not list its children's parameters under the names
        ``child_parameter_prefix`` gives them (a user container that renames them must override it).

    Examples
    --------
    >>> import fastnn as fnn
    >>> block = fnn.Residual([fnn.Dense(3, 3, bias=False)])
    >>> _ = block.build((3,), "float32")
    >>> {name: (type(owner).__name__, own) for name, (owner, own) in parameter_owners(block).items()}
    {'block.0.weight': ('Dense', 'weight')}
    """
    names = [spec.name for spec in layer.parameter_specs()]
    owners: dict[str, tuple[Layer, str]] = {}
    for child_name, child in layer.sublayers():
        prefix = layer.child_parameter_prefix(child_name)
        owners.update((prefix + name, owner) for name, owner in parameter_owners(child).items())
    unlisted = [name for name in owners if name not in names]
    if unlisted:
        raise ValueError(
            f"{type(layer).__name__}'s parameters are {names}, but its sublayers' parameters, named by its "
            f"child_parameter_prefix, are {sorted(owners)}: {unlisted} are missing; a container lists each "
            f"child's parameters as child_parameter_prefix(name) + the child's name (Layer.parameter_specs does: "
            f"a container with parameters of its own returns them followed by super().parameter_specs()), "
            f"so list them so, or override child_parameter_prefix to say how it names them"
        )
    return {name: owners.get(name, (layer, name)) for name in names}


def children_parameter_specs(layer: Layer) -> list[ParamSpec]:
    """The parameters of ``layer``'s sublayers, each named ``child_parameter_prefix(child) +`` the
    child's name (a container's :meth:`Layer.parameter_specs`).

    Parameters
    ----------
    layer : Layer
        A container whose sublayers are built.

    Returns
    -------
    list of ParamSpec
        In sublayer order.

    Examples
    --------
    >>> import fastnn as fnn
    >>> block = fnn.Residual([fnn.Dense(3, 3)])
    >>> _ = block.build((3,), "float32")
    >>> [spec.name for spec in children_parameter_specs(block)]
    ['block.0.weight', 'block.0.bias']
    """
    return [
        ParamSpec(layer.child_parameter_prefix(name) + spec.name, spec.shape, spec.decay, spec.init)
        for name, child in layer.sublayers()
        for spec in child.parameter_specs()
    ]


def bind_children(layer: Layer, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    """Bind each sublayer of ``layer`` to its views among ``params`` and ``grads``, named as
    ``children_parameter_specs`` names them (a container's :meth:`Layer.bind`).

    Parameters
    ----------
    layer : Layer
        A container.
    params, grads : dict of str to ndarray
        The container's views, by its parameter names.

    Examples
    --------
    >>> import fastnn as fnn
    >>> block = fnn.Residual([fnn.Dense(2, 2, bias=False)])
    >>> _ = block.build((2,), "float64")
    >>> bind_children(block, {"block.0.weight": np.eye(2)}, {"block.0.weight": np.zeros((2, 2))})
    >>> block.block[0].weight
    array([[1., 0.],
           [0., 1.]])
    """
    for name, child in layer.sublayers():
        prefix = layer.child_parameter_prefix(name)
        own = [spec.name for spec in child.parameter_specs()]
        missing = [prefix + n for n in own if prefix + n not in params or prefix + n not in grads]
        if missing:
            parameter_owners(layer)  # (says which names the container's parameter_specs left out)
            raise ValueError(
                f"{type(layer).__name__}.bind was given no views for {missing} of its sublayer {name!r}; "
                f"its parameter_specs must list them (Layer.parameter_specs does)"
            )
        child.bind({n: params[prefix + n] for n in own}, {n: grads[prefix + n] for n in own})


def _address(array) -> tuple | None:
    """(data pointer, shape) of a host or device array, None for anything else."""
    face = getattr(array, "__cuda_array_interface__", None) or getattr(array, "__array_interface__", None)
    if not isinstance(face, dict) or "data" not in face:
        return None
    return face["data"][0], tuple(face["shape"])


def _bound_array(layer: Layer, name: str):
    """What ``layer`` (whose ``bind`` is fastnn's) holds as its parameter ``name``."""
    arrays = getattr(layer, "parameter_arrays", None)
    return arrays.get(name) if isinstance(arrays, dict) else getattr(layer, name, None)


def _binds_by_name(layer: Layer) -> bool:
    """Whether ``layer``'s ``bind`` and ``parameter_specs`` are fastnn's (a built-in layer, or a
    user's subclass of one that keeps them), so it holds each parameter under its name."""
    kind = type(layer)
    return all(
        getattr(getattr(kind, m, None), "__module__", "").startswith("fastnn.") for m in ("bind", "parameter_specs")
    )


def check_sublayers_bound(layer: Layer, views: Mapping[str, np.ndarray]) -> None:
    """Check that :meth:`Layer.bind` of ``layer``, given ``views``, reached every layer inside it, and
    that each container's :meth:`~Layer.buffers` include its sublayers': a container that overrides
    ``bind`` or ``buffers`` (for state of its own) and forgets ``super()``'s would train layers holding
    no parameters, or stale ones, or lose their running statistics when saved.

    Each layer inside whose ``bind`` and ``parameter_specs`` are fastnn's (a built-in or a subclass
    of one) must hold its views of ``views`` (named ``child_parameter_prefix`` + its own, at any
    depth); a user's own leaf layer, which keeps its views where it likes, is not looked at.

    Parameters
    ----------
    layer : Layer
        A layer just bound by a model.
    views : dict of str to ndarray
        The views the model gave its :meth:`~Layer.bind`.

    Raises
    ------
    ValueError
        Naming the container whose ``bind`` (the innermost one written outside fastnn above the
        layer left out) or ``buffers`` left a layer out, that layer and the fix
        (``super().bind(params, grads)``, ``{**own, **super().buffers()}``).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Residual([fnn.Dense(3, 3)])], input_shape=(3,))
    >>> block = model.layers[0]
    >>> check_sublayers_bound(block, block.parameter_views)  # bound: nothing to say
    >>> check_sublayers_bound(block, {k: v.copy() for k, v in block.parameter_views.items()})
    Traceback (most recent call last):
    ...
    ValueError: Residual.bind did not pass 'block.0' (Dense(3, 3)) its parameter 'weight' ...
    """
    _check_bound(layer, views, [])


def _check_bound(layer: Layer, views: Mapping[str, np.ndarray], chain: list[tuple[Layer, str]]) -> dict:
    """``check_sublayers_bound`` of ``layer``, inside the containers ``chain`` ([(container, the
    name of the next one in it)]), in one walk: each layer inside is looked at once, however deep
    (a container's check uses its children's buffers as the walk found them, rather than asking
    each level for the buffers of everything below it again). Returns ``layer``'s buffers (what
    its :meth:`Layer.buffers` gives)."""
    children = layer.sublayers()
    if not children:
        return layer.buffers()
    below_buffers: dict[str, np.ndarray] = {}
    for name, child in children:
        prefix = layer.child_parameter_prefix(name)
        mine = {n: views[prefix + n] for n in (spec.name for spec in child.parameter_specs()) if prefix + n in views}
        below = [*chain, (layer, name)]
        if not child.sublayers() and _binds_by_name(child):
            for n, view in mine.items():
                held = _bound_array(child, n)
                if held is None or _address(held) != _address(view):
                    written = [i for i, (outer, _) in enumerate(below) if not _binds_by_name(outer)]
                    at = written[-1] if written else len(below) - 1
                    path = ".".join(step for _, step in below[at:])
                    raise ValueError(
                        f"{type(below[at][0]).__name__}.bind did not pass {path!r} ({child!r}) its parameter "
                        f"{n!r} (it holds {'none' if held is None else 'another array'}), so training would "
                        f"compute with {'nothing' if held is None else 'stale weights'}; a container's bind that "
                        f"keeps views of its own must also call super().bind(params, grads)"
                    )
        for key, buf in _check_bound(child, mine, below).items():
            below_buffers[prefix + key] = buf  # (children_buffers(layer), from the walk)
    if getattr(type(layer), "buffers", None) is Layer.buffers:  # Layer's own: exactly its children's
        return below_buffers
    given = layer.buffers()
    left_out = [key for key in below_buffers if key not in given]
    if left_out:
        raise ValueError(
            f"{type(layer).__name__}.buffers() leaves out its sublayers' buffers {left_out}, so saving and "
            f"copying the model would lose them; a container with buffers of its own returns "
            f"{{**its_own, **super().buffers()}}"
        )
    return given


def children_buffers(layer: Layer) -> dict[str, np.ndarray]:
    """The buffers of ``layer``'s sublayers, named as their parameters are (a container's
    :meth:`Layer.buffers`).

    Parameters
    ----------
    layer : Layer
        A container.

    Returns
    -------
    dict of str to ndarray
        ``child_parameter_prefix(child) + name`` -> buffer.

    Examples
    --------
    >>> import fastnn as fnn
    >>> children_buffers(fnn.Residual([fnn.Dropout(0.5)]))
    {'block.0.step': array([0])}
    """
    return {
        layer.child_parameter_prefix(name) + key: buf
        for name, child in layer.sublayers()
        for key, buf in child.buffers().items()
    }


def walk_layers(layers):
    """Every layer of ``layers`` and, depth first, the layers inside them (Residual's block ...)."""
    for layer in layers:
        yield layer
        yield from walk_layers([child for _, child in layer.sublayers()])


def normalize_shape(shape, argument: str = "a per-sample shape") -> Shape:
    """A per-sample shape as a tuple of positive ints (an int n is (n,)); ValueError naming
    ``argument`` otherwise."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if isinstance(shape, (str, bytes)):
        raise ValueError(
            f"{argument} must be a tuple of positive integers, e.g. (784,) or (1, 28, 28), got the string {shape!r}"
        )
    try:
        out = tuple(int(d) for d in shape)
        ok = all(float(d) == o for d, o in zip(shape, out))
    except (TypeError, ValueError):
        ok, out = False, ()
    if not ok or not out or any(d < 1 for d in out):
        raise ValueError(
            f"{argument} must be a non-empty tuple of positive integers, e.g. (784,) or (1, 28, 28), got {shape!r}"
        )
    return out


def size_of(shape: Shape) -> int:
    return math.prod(shape)


def owner_ref(model) -> weakref.ref:
    return weakref.ref(model)


class ActivationSetting:
    """The ``activation`` attribute of the layers with one (Activation, Dense, the convolutions):
    the activation's name. Setting it (a name, None or an activation layer, as the constructors
    take it) resolves the kernel code and parameter again (``code``, ``alpha``), so a built model
    computes the activation it saves; a layer whose class sets ``rowwise_activation = False``
    refuses softmax and log_softmax, one whose class names its ``activation_names`` (ReLU ...)
    any other activation."""

    def __get__(self, layer, owner=None):
        return self if layer is None else layer.__dict__["_activation"]

    def __set__(self, layer, value) -> None:
        from ..kernels.activations import ROWWISE_CODES
        from .activation import resolve_activation

        name, code, alpha = resolve_activation(value)
        allowed = getattr(layer, "activation_names", None)
        if allowed is not None and name not in allowed:
            raise ValueError(
                f"{type(layer).__name__} computes {' or '.join(map(repr, allowed))}, not {name!r} (its saved "
                f"config names no activation); for {name!r} use fnn.Activation({name!r}) in a new model"
            )
        if code >= ROWWISE_CODES and not getattr(layer, "rowwise_activation", True):
            raise ValueError(
                f"activation={name!r} normalises whole rows, which {type(layer).__name__} cannot fuse (its "
                "activation acts on each output element on its own); use an elementwise activation (e.g. "
                "'relu'), or keep the outputs as logits and train with loss='cross_entropy'"
            )
        layer.__dict__.update(_activation=name, code=code, alpha=alpha)


class WeightAndBias:
    """Mixin of layers with a decayed ``weight`` and an optional ``bias`` (Dense, Conv1d/2d):
    their fused activation and initialiser options, parameter specs (initialised by name:
    ``self.init``, ``self.bias_init``) and binding."""

    activation = ActivationSetting()
    argument_attributes = {"use_bias": "bias"}

    def _weight_bias_options(self, activation, activation_params: dict, init, bias_init, bias) -> None:
        """Check and keep the constructor's activation (fused), init (default: by activation), bias_init, bias."""
        from .. import init as initializers
        from .activation import resolve_activation

        self.activation, self.code, self.alpha = resolve_activation(activation, **activation_params)
        self.init = (
            initializers.default_init(self.activation)
            if init is None
            else V.check_choice(init, initializers.INITIALIZERS, "init")
        )
        self.bias_init = V.check_choice(bias_init, initializers.INITIALIZERS, "bias_init")
        self.use_bias = V.check_bool(bias, "bias")
        self.weight = self.bias = self.grad_weight = self.grad_bias = None

    def _weight_bias_specs(self, weight_shape: tuple, fan_in: int, fan_out: int, n_out: int) -> list[ParamSpec]:
        from .. import init as initializers

        def init_weight(view, seed, stream):
            initializers.initialize(view, self.init, fan_in, fan_out, seed, stream)

        def init_bias(view, seed, stream):
            initializers.initialize(view, self.bias_init, fan_in, fan_out, seed, stream)

        specs = [ParamSpec("weight", weight_shape, True, init_weight)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (n_out,), False, init_bias))
        return specs

    def bind(self, params, grads):
        self.weight, self.grad_weight = params["weight"], grads["weight"]
        if self.use_bias:
            self.bias, self.grad_bias = params["bias"], grads["bias"]
