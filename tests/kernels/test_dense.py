"""dense_forward / dense_backward against float64 references, finite differences and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._config import (
    MATVEC_SPLIT_BYTES,
    MATVEC_SPLIT_MIN_BYTES,
    REDUCTION_CHUNK_ROWS,
    matvec_split_bytes_for,
)
from fastnn.kernels.activations import (
    ACTIVATIONS,
    IDENTITY,
    ROWWISE_CODES,
    activation_backward,
    activation_forward,
)
from fastnn.kernels.dense import dense_backward, dense_forward
from fastnn.kernels.tiling import matvec_split_bytes, numba_threads
from tests import _reference_core as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
ACTIVATION_NAMES = ["identity", "relu", "tanh", "sigmoid", "gelu", "leaky_relu", "softmax", "log_softmax"]
# (batch, in_features, out_features); the last three run the parallel paths: output tiles, and a
# forward split along its long inner size (kernels.dense._k_parts: k >= 4 x the larger output side)
SHAPES = [(1, 3, 5), (7, 13, 11), (130, 77, 300), (129, 130, 131), (33, 2001, 130)]
TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-11}}


def _problem(m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    grad_y = rng.standard_normal((m, n)).astype(dtype)
    return x, w, b, grad_y


def _forward(name, x, w, b, alpha):
    """Returns (z, y); for identity y is z, as the layer passes it. Softmax rows run after the
    kernel (called with identity), as the layer calls them."""
    m, n = x.shape[0], w.shape[1]
    z = np.full((m, n), np.nan, dtype=x.dtype)
    y = z if name == "identity" else np.full_like(z, np.nan)
    code = ACTIVATIONS[name][0]
    if code >= ROWWISE_CODES:
        dense_forward(x, w, b, z, z, IDENTITY, alpha)
        activation_forward(z, y, code, alpha)
    else:
        dense_forward(x, w, b, z, y, code, alpha)
    return z, y


def _backward(name, x, w, b, grad_y, alpha, need_grad_x=True, grad_x=None):
    """Returns (grad_x, grad_w, grad_b); for identity grad_z is (a copy of) grad_y."""
    z, y = _forward(name, x, w, b, alpha)
    m, n = z.shape
    grad_y = grad_y.copy()
    grad_z = grad_y if name == "identity" else np.full_like(z, np.nan)
    if grad_x is None:
        grad_x = np.full_like(x, np.nan)
    grad_w = np.full_like(w, np.nan)
    grad_b = np.full_like(b, np.nan)
    partial_b = np.full((-(-m // REDUCTION_CHUNK_ROWS), n), np.nan, dtype=x.dtype)
    code = ACTIVATIONS[name][0]
    if code >= ROWWISE_CODES:
        activation_backward(z, y, grad_y, grad_z, code, alpha)
        grad_y, code = grad_z, IDENTITY
    dense_backward(x, w, z, y, grad_y, grad_z, grad_x, grad_w, grad_b, partial_b, code, alpha, need_grad_x)
    return grad_x, grad_w, grad_b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_forward_and_backward_match_reference(name, dtype):
    alpha = ACTIVATIONS[name][1]
    for shape in SHAPES:
        x, w, b, grad_y = _problem(*shape, dtype)
        z, y = _forward(name, x, w, b, alpha)
        z_ref, y_ref = ref.dense_forward(x, w, b, name, alpha)
        assert z.dtype == y.dtype == x.dtype
        np.testing.assert_allclose(z, z_ref, **TOL[dtype], err_msg=f"z {shape}")
        np.testing.assert_allclose(y, y_ref, **TOL[dtype], err_msg=f"y {shape}")
        grads = _backward(name, x, w, b, grad_y, alpha)
        for label, got, want in zip(
            ("grad_x", "grad_w", "grad_b"), grads, ref.dense_backward(x, w, b, grad_y, name, alpha)
        ):
            assert got.dtype == x.dtype
            np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"{label} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [name for name, (code, _, _) in ACTIVATIONS.items() if code < ROWWISE_CODES])
@pytest.mark.parametrize("n", [1, 10, 16, 17])
def test_grad_z_and_bias_sums_are_the_two_pass_bits(name, dtype, n):
    """Narrow layers (one pass: grad_z, then its bias sum, per element) give the bits of the two
    passes: grad_z = activation_backward's, grad_b = each row chunk's rows added in order, the
    chunks' sums added in order."""
    m = REDUCTION_CHUNK_ROWS + 6  # two chunks
    alpha = ACTIVATIONS[name][1]
    code = ACTIVATIONS[name][0]
    x, w, b, grad_y = _problem(m, 5, n, dtype, seed=n)
    z, y = _forward(name, x, w, b, alpha)
    _, _, grad_b = _backward(name, x, w, b, grad_y, alpha)
    grad_z = grad_y.copy()
    if code != IDENTITY:
        activation_backward(z, y, grad_y, grad_z, code, alpha)
    sums = []
    for r0 in range(0, m, REDUCTION_CHUNK_ROWS):
        total = np.zeros(n, dtype)
        for row in grad_z[r0 : r0 + REDUCTION_CHUNK_ROWS]:
            total = total + row
        sums.append(total)
    np.testing.assert_array_equal(grad_b, sums[0] + sums[1])
    grad_z_kernel = np.full_like(z, np.nan)
    dense_backward(
        x,
        w,
        z,
        y,
        grad_y,
        grad_z_kernel if code != IDENTITY else grad_y.copy(),
        np.full_like(x, np.nan),
        np.full_like(w, np.nan),
        np.full_like(b, np.nan),
        np.full((2, n), np.nan, dtype),
        code,
        alpha,
        True,
    )
    if code != IDENTITY:
        np.testing.assert_array_equal(grad_z_kernel, grad_z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 16, 33])
def test_identity_output_in_place_is_the_bits_of_a_separate_output(dtype, n):
    """An identity layer writes y into z itself (the layer passes y = z): the same bits as y apart."""
    x, w, b, _ = _problem(40, 7, n, dtype)
    z_same = np.full((40, n), np.nan, dtype)
    dense_forward(x, w, b, z_same, z_same, IDENTITY, 0.0)
    z, y = np.full_like(z_same, np.nan), np.full_like(z_same, np.nan)
    dense_forward(x, w, b, z, y, IDENTITY, 0.0)
    np.testing.assert_array_equal(z_same, z)
    np.testing.assert_array_equal(z_same, y)
    np.testing.assert_allclose(z_same, x.astype(np.float64) @ w + b, **TOL[dtype])


@pytest.mark.parametrize("shape", [(7, 13, 11), (130, 77, 300)])
def test_need_grad_x_false_leaves_grad_x_untouched(shape):
    x, w, b, grad_y = _problem(*shape, np.float64)
    sentinel = np.full_like(x, 7.0)
    grad_x, grad_w, grad_b = _backward("relu", x, w, b, grad_y, 0.0, need_grad_x=False, grad_x=sentinel)
    assert np.all(grad_x == 7.0)
    _, want_w, want_b = ref.dense_backward(x, w, b, grad_y, "relu")
    np.testing.assert_allclose(grad_w, want_w, **TOL[np.float64])
    np.testing.assert_allclose(grad_b, want_b, **TOL[np.float64])


@pytest.mark.parametrize("name", ["tanh", "gelu", "softmax"])
def test_backward_finite_differences(name):
    x, w, b, upstream = _problem(4, 5, 3, np.float64, seed=1)
    alpha = ACTIVATIONS[name][1]
    grads = _backward(name, x, w, b, upstream, alpha)

    def objective(x_, w_, b_):
        return np.sum(upstream * _forward(name, x_, w_, b_, alpha)[1])

    numeric = numeric_gradients(objective, [x, w, b], h=1e-6)
    for which, (grad, expected) in enumerate(zip(grads, numeric)):
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8, err_msg=("x", "w", "b")[which])


@pytest.mark.parametrize(
    "name, shape",
    # batch-1 tiles: 784x256 float32 (784 KiB) runs them in a loop (below 1 MiB, whatever the L2);
    # 1040x256 (1040 KiB) in a region on a CPU with up to 2 MiB of L2 per core; 1024x1024 (4 MiB) in a
    # region up to 8 MiB (kernels.dense._threaded_product, _config.MATVEC_SPLIT_BYTES)
    [
        ("relu", (256, 512, 384)),
        ("softmax", (256, 512, 384)),
        ("tanh", (1, 784, 256)),
        ("relu", (1, 1040, 256)),
        ("relu", (1, 1024, 1024)),
        ("identity", (33, 2001, 130)),  # the forward split along k, z summed in part order
        ("gelu", (64, 2048, 128)),  # embed-10k's Dense layer
    ],
)
def test_bit_identical_on_one_and_two_threads(name, shape):
    x, w, b, grad_y = _problem(*shape, np.float32, seed=2)
    alpha = ACTIVATIONS[name][1]
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _forward(name, x, w, b, alpha) + _backward(name, x, w, b, grad_y, alpha)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _forward(name, x, w, b, alpha) + _backward(name, x, w, b, grad_y, alpha)
    finally:
        numba.set_num_threads(threads)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


def test_matches_torch_linear():
    torch = pytest.importorskip("torch")
    x, w, b, grad_y = _problem(9, 6, 4, np.float64, seed=3)
    _, y = _forward("tanh", x, w, b, 0.0)
    grads = _backward("tanh", x, w, b, grad_y, 0.0)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.tanh(torch.nn.functional.linear(xt, wt.T, bt))
    yt.backward(torch.tensor(grad_y))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    for got, want in zip(grads, (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_rowwise_codes_are_refused(name):
    """The kernels compile the elementwise epilogue only: a row-wise code raises, never a silent identity."""
    x, w, b, grad_y = _problem(3, 4, 5, np.float64)
    z, y = np.zeros((3, 5)), np.zeros((3, 5))
    code = ACTIVATIONS[name][0]
    with pytest.raises(ValueError, match="activation_forward"):
        dense_forward(x, w, b, z, y, code, 0.0)
    grads = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b), np.zeros((1, 5))
    with pytest.raises(ValueError, match="activation_backward"):
        dense_backward(x, w, z, y, grad_y, z.copy(), *grads, code, 0.0, True)


def test_parallel_kernels_see_numbas_current_thread_count():
    """The tiles of a parallel product skip the prange region at one thread (kernels.dense._threaded)."""

    @numba.njit
    def threads():
        return numba_threads()

    before = numba.get_num_threads()
    try:
        for n in {1, before}:
            numba.set_num_threads(n)
            assert threads() == n
    finally:
        numba.set_num_threads(before)


def test_batch_one_products_split_above_half_a_cores_l2():
    """The compiled kernels read the split size of this process (half the L2 of a core, as the
    system reports it, and at least 1 MiB), not a constant frozen into the cache."""
    assert numba.njit(lambda: matvec_split_bytes())() == MATVEC_SPLIT_BYTES >= MATVEC_SPLIT_MIN_BYTES


def test_batch_one_products_below_1_mib_run_on_one_thread():
    """A matrix-vector product splits over the threads only above half a core's L2 and above 1 MiB:
    below, one core streams the weights about as fast as a parallel region starts (on a 1 MiB-L2
    Zen 4: 9-11 ns/KiB from L2 or L3, a region 3+ us), so mlp's 784x256 float32 weights (784 KiB)
    stay on one thread on any CPU."""
    assert MATVEC_SPLIT_MIN_BYTES == 1 << 20
    kib = 1 << 10
    for l2, split in (
        (256 * kib, 1 << 20),
        (1 << 20, 1 << 20),
        (2 << 20, 1 << 20),
        (4 << 20, 2 << 20),
        (32 << 20, 16 << 20),
    ):
        assert matvec_split_bytes_for(l2) == split
    assert 784 * 256 * 4 <= MATVEC_SPLIT_BYTES
