"""What the ONNX writer and the PyTorch converter share: the lookup of a layer's handler in a
table keyed by fastnn layer class, and the parameters of any layer by their spec names, whether it
is a model's layer or one inside a composite (Residual, TimeDistributed, TransformerEncoderBlock),
whose views the model does not keep."""

from __future__ import annotations

from ..layers import TimeDistributed


def layer_parameters(layer) -> dict:
    """{spec name: array} of a layer's parameters, for a model's layer or one inside a composite."""
    if layer.parameter_views:
        return dict(layer.parameter_views)
    if isinstance(layer, TimeDistributed):  # its parameters are its inner layer's, unprefixed
        return layer_parameters(layer.layer)
    if layer.sublayers():
        return {f"{prefix}.{k}": v for prefix, sub in layer.sublayers() for k, v in layer_parameters(sub).items()}
    if getattr(layer, "parameter_arrays", None):  # recurrent layers keep theirs in a dict
        return layer.parameter_arrays
    return {spec.name: getattr(layer, spec.name) for spec in layer.parameter_specs()}


def handler_for(layer, table: dict):
    """The entry of ``table`` ({fastnn layer class: handler}) for the nearest class of ``layer``,
    or None; a layer whose own class is not fastnn's (a user subclass) gets None."""
    if type(layer).__module__.startswith("fastnn.layers"):
        return next((table[c] for c in type(layer).__mro__ if c in table), None)
    return None
