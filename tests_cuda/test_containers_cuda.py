"""A user's container written the short way (Layer passes set_device, bind, buffers on to its
sublayers) moves to "cuda" (the simulator) with its children and computes as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers import LAYERS
from fastnn.layers.base import walk_layers
from tests.test_containers import ParallelSum, PostNorm, container_data, parallel_model, post_norm_model


@pytest.fixture(autouse=True)
def registered():
    for kind in (ParallelSum, PostNorm):
        fnn.register_layer(kind)
    yield
    for kind in (ParallelSum, PostNorm):
        LAYERS.pop(kind.__name__, None)


@pytest.mark.parametrize("make", [parallel_model, post_norm_model], ids=["children only", "parameters of its own"])
def test_a_user_container_moves_to_cuda_with_its_sublayers(make):
    X, y = container_data(8)
    cpu, gpu = make().compile("mse", "sgd"), make().compile("mse", "sgd").to("cuda")
    assert {layer.device for layer in walk_layers(gpu.layers)} == {"cuda"}
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-4, atol=1e-5)
    losses = [[model.train_step(X, y) for _ in range(2)] for model in (cpu, gpu)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    np.testing.assert_allclose(gpu.to("cpu").params, cpu.params, rtol=1e-4, atol=1e-5)
