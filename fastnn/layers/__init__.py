"""Layers: Dense, activation layers (and, as they land, Dropout, normalisation, Residual)."""
from .activation import (ACTIVATION_LAYERS, ELU, GELU, SELU, Activation, Identity, LeakyReLU, LogSoftmax, ReLU,
                         Sigmoid, Softmax, Tanh)
from .base import Layer, ParamSpec, Workspace
from .dense import Dense

__all__ = ["Layer", "ParamSpec", "Workspace", "Dense", "Activation", "Identity", "Sigmoid", "Tanh", "ReLU",
           "LeakyReLU", "ELU", "SELU", "GELU", "Softmax", "LogSoftmax", "ACTIVATION_LAYERS"]
