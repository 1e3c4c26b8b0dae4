"""A row vector times a matrix, written in LLVM vector IR: ``c = x @ W`` for one row ``x``.

A Dense layer at batch 1 (mlp inference's serving call) multiplies one row by its ``k x n``
weights. OpenBLAS's ``sgemv`` (row-major ``W.T @ x``) reads ``W`` with unaligned vectors and
loads and stores ``c`` once per group of rows; here the output row stays in vector registers (up
to 16 vectors, 256 float32 columns on AVX-512) while ``W``'s rows stream through once, read as
aligned vectors (benchmarks/RESULTS.md, "Session 29: batch-1 products"; 784x256 float32 from L2:
~4.4 against ~5.8-8.5 us at one thread).

Every output element is one fused multiply-add chain over ``k`` in order, starting from zero, the
same whatever block of columns computes it (a column's bits do not depend on ``n``, on the block
or on a tiling of the columns). They can differ from OpenBLAS's in the last bits, so a product
takes one or the other by its shape only (:func:`gemv_wanted`), the same in every path (eager,
fused step, inference plan).

The register shape follows the compile target, as :mod:`.microgemm`'s: with AVX-512, 16 float32
or 8 float64 a vector and up to :data:`NV_WIDE` vectors of accumulators (of the 32 registers);
otherwise 8 or 4 a vector and up to :data:`NV_NARROW` (of 16). The first and last vectors of a
block are read and written with masked loads and stores: nothing outside ``x``, the ``k x n``
block of ``W`` and the ``n`` outputs is read or written. Used by default where measured faster
than OpenBLAS (AVX-512 targets; ``FASTNN_MICRO_GEMM``, shared with :mod:`.microgemm`: auto, on, off).

Shapes: ``x`` any array whose elements ``x_off + kk * incx`` (kk < k) are the row; ``w`` with
elements ``w_off + kk * ldw + j`` (j < n) the matrix (unit stride along n); ``c`` with elements
``c_off + j`` the output; one dtype, float32 or float64. Offsets and strides in elements.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT
from ._outline import OutOfLine, element_bytes, vector_lanes
from .microgemm import _data, _fma, _mode, _splat, _target_int, _wide_compile_target, _wide_target

#: vectors of accumulators by target (AVX-512 has 32 vector registers, AVX2 16): a block of 16 (8)
#: vectors of columns, plus one when the block starts inside a vector (its rows read aligned)
NV_WIDE, NV_NARROW = 17, 9
#: products whose output row takes at most this many bytes (256 float32 columns, 128 float64) run in
#: one pass over ``W`` here; wider ones only while ``W`` takes at most :data:`MULTI_PASS_BYTES`
#: (several passes over ``W``, each a slice of its rows: from memory that lost to OpenBLAS by 10-20%)
ONE_PASS_BYTES = 1024
#: see :data:`ONE_PASS_BYTES`
MULTI_PASS_BYTES = 1 << 20

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_I1 = ir.IntType(1)


def _row_vectors(context) -> int:
    """Vectors of accumulators on the compile target."""
    return NV_WIDE if _wide_target(context) else NV_NARROW


def _masked(builder, name: str, vec, args):
    """A call of ``llvm.masked.<name>`` (load or store) on vectors of type ``vec``."""
    width = vec.count
    mask = ir.VectorType(_I1, width)
    ptr = ir.PointerType()
    if name == "load":
        fn_type = ir.FunctionType(vec, [ptr, _I32, mask, vec])
    else:
        fn_type = ir.FunctionType(ir.VoidType(), [vec, ptr, _I32, mask])
    fn = cgutils.get_or_insert_function(
        builder.module, fn_type, f"llvm.masked.{name}.v{width}{vec.element.intrinsic_name}.p0"
    )
    return builder.call(fn, args)


def _lane_mask(builder, width: int, low, high):
    """The i1 vector ``low <= lane < high`` (i64 values) of ``width`` lanes."""
    lanes = ir.VectorType(_I64, width)
    index = ir.Constant(lanes, list(range(width)))
    return builder.and_(
        builder.icmp_signed(">=", index, _splat(builder, lanes, low)),
        builder.icmp_signed("<", index, _splat(builder, lanes, high)),
    )


def _emit_block(builder, vec, fma, px, incx, pw, ldw, pc, k, nv: int, head, tail):
    """IR of ``nv`` vectors of outputs: ``pc[j] = sum_kk px[kk * incx] * pw[kk * ldw + j]``, one
    multiply-add chain a column in ``kk`` order from zero. ``head`` and ``tail`` (i1 vectors): the
    lanes of the first and the last vector that exist; the others are neither read nor written."""
    width = vec.count
    vec_ptr = vec.as_pointer()
    zero = ir.Constant(vec, [0.0] * width)
    align = ir.Constant(_I32, element_bytes(vec.element))  # the element's own
    masks = {0: head} if nv > 1 else {0: builder.and_(head, tail)}
    if nv > 1:
        masks[nv - 1] = tail

    def vector_at(base, j):
        return builder.bitcast(builder.gep(base, [ir.Constant(_I64, j * width)]), vec_ptr)

    accumulators = [cgutils.alloca_once_value(builder, zero) for _ in range(nv)]
    for slot in accumulators:  # (allocas live in the entry block: zero them here, at each use)
        builder.store(zero, slot)

    def emit_row(kk):
        scalar = builder.load(builder.gep(px, [builder.mul(kk, incx)]))
        broadcast = _splat(builder, vec, scalar)
        row = builder.gep(pw, [builder.mul(kk, ldw)])
        for j in range(nv):
            if j in masks:
                w = _masked(builder, "load", vec, [vector_at(row, j), align, masks[j], zero])
            else:
                w = builder.load(vector_at(row, j), align=1)
            slot = accumulators[j]
            builder.store(builder.call(fma, [broadcast, w, builder.load(slot)]), slot)

    with cgutils.for_range(builder, k) as loop:
        emit_row(loop.index)
    for j in range(nv):
        value = builder.load(accumulators[j])
        if j in masks:
            _masked(builder, "store", vec, [value, vector_at(pc, j), align, masks[j]])
        else:
            builder.store(value, vector_at(pc, j), align=1)


def _row_function_type(real) -> ir.FunctionType:
    """``void (x*, incx, w*, ldw, c*, k, n)``."""
    ptr = real.as_pointer()
    return ir.FunctionType(ir.VoidType(), [ptr, _I64, ptr, _I64, ptr, _I64, _I64])


def _define_row(module, symbol: str, real, wide: bool, variant: str) -> None:
    """Define in ``module`` the function ``symbol`` (external linkage, :func:`_row_function_type`):
    :func:`row_times_matrix` on pointers to ``x``'s, ``w``'s and ``c``'s first elements, on 512-bit
    (``wide``) or 256-bit vectors of ``real`` (an LLVM float type); one ``variant`` ("row")."""
    size = element_bytes(real)
    width = vector_lanes(real, wide)
    function = ir.Function(module, _row_function_type(real), symbol)
    px, incx_v, pw, ldw_v, pc, k_v, n_v = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    vec = ir.VectorType(real, width)
    fma = _fma(builder, vec)
    nv_max = NV_WIDE if wide else NV_NARROW
    one, w_const = ir.Constant(_I64, 1), ir.Constant(_I64, width)
    # the block's lead within an aligned vector, when all its rows share it (else 0: unaligned reads)
    address = builder.ptrtoint(pw, _I64)
    vector_bytes = ir.Constant(_I64, width * size)
    offset = builder.urem(address, vector_bytes)
    same = builder.and_(
        builder.icmp_signed("==", builder.srem(ldw_v, w_const), ir.Constant(_I64, 0)),
        builder.icmp_signed("==", builder.urem(offset, ir.Constant(_I64, size)), ir.Constant(_I64, 0)),
    )
    lead = builder.select(same, builder.udiv(offset, ir.Constant(_I64, size)), ir.Constant(_I64, 0))
    neg_lead = builder.sub(ir.Constant(_I64, 0), lead)
    pw = builder.gep(pw, [neg_lead])
    pc = builder.gep(pc, [neg_lead])
    span = builder.add(lead, n_v)  # lanes from the first vector's start to the last column
    vectors = builder.sdiv(builder.add(span, ir.Constant(_I64, width - 1)), w_const)
    last_lanes = builder.sub(span, builder.mul(builder.sub(vectors, one), w_const))
    full = builder.sdiv(vectors, ir.Constant(_I64, nv_max))
    rest = builder.sub(vectors, builder.mul(full, ir.Constant(_I64, nv_max)))
    all_lanes = ir.Constant(ir.VectorType(_I1, width), [1] * width)
    head_mask = _lane_mask(builder, width, lead, w_const)
    tail_mask = _lane_mask(builder, width, ir.Constant(_I64, 0), last_lanes)
    panel = ir.Constant(_I64, nv_max * width)
    # full blocks of nv_max vectors (the first's head and the last's tail masked)
    with cgutils.for_range(builder, full) as loop:
        col = builder.mul(loop.index, panel)
        first = builder.icmp_signed("==", loop.index, ir.Constant(_I64, 0))
        last = builder.and_(
            builder.icmp_signed("==", loop.index, builder.sub(full, one)),
            builder.icmp_signed("==", rest, ir.Constant(_I64, 0)),
        )
        head = builder.select(first, head_mask, all_lanes)
        tail = builder.select(last, tail_mask, all_lanes)
        w_block, c_block = builder.gep(pw, [col]), builder.gep(pc, [col])
        _emit_block(builder, vec, fma, px, incx_v, w_block, ldw_v, c_block, k_v, nv_max, head, tail)
    # the vectors left (fewer than nv_max): one block, its tail masked
    done = builder.mul(full, panel)
    w_rest, c_rest = builder.gep(pw, [done]), builder.gep(pc, [done])
    head = builder.select(builder.icmp_signed("==", full, ir.Constant(_I64, 0)), head_mask, all_lanes)
    after = builder.append_basic_block("gemv.after")
    switch = builder.switch(rest, after)
    for nv in range(1, nv_max):
        case = builder.append_basic_block(f"gemv.rest{nv}")
        switch.add_case(ir.Constant(_I64, nv), case)
        builder.position_at_end(case)
        _emit_block(builder, vec, fma, px, incx_v, w_rest, ldw_v, c_rest, k_v, nv, head, tail_mask)
        builder.branch(after)
    builder.position_at_end(after)
    builder.ret_void()


#: the row kernel, compiled once a process and called by name (:mod:`._outline`), not copied into
#: every library of a GEMM's call chain
ROWS = OutOfLine("fastnn_gemv_row_v1_", ("row",), _define_row)
_define_512, _define_256 = ROWS.definer(True), ROWS.definer(False)


@njit(**JIT)
def _rows_512(like):
    """Compiled for its library: it defines the 512-bit row kernel of ``like``'s dtype."""
    _define_512(like)


@njit(**JIT)
def _rows_256(like):
    """Compiled for its library: it defines the 256-bit row kernel of ``like``'s dtype."""
    _define_256(like)


ROWS.hosts(_rows_512, _rows_256)


@intrinsic
def row_times_matrix(typingctx, x, x_off, incx, w, w_off, ldw, c, c_off, k, n):
    """``c[c_off + j] = sum_kk x[x_off + kk * incx] * w[w_off + kk * ldw + j]`` for ``j < n`` (see
    the module docstring): a call of the out-of-line kernel (:data:`ROWS`).

    When every row of the block starts at the same offset within a vector (``ldw`` a multiple of the
    vector's lanes), its ``s`` leading lanes before the block are skipped: the vectors are read
    aligned, the first and last ones masked, and each output column sits ``s`` lanes further in its
    vector (a 784x256 float32 block 16 bytes off a cache line: ~7.4 -> ~4.4 us, RESULTS.md).
    Then blocks of the target's accumulator vectors, the last one of the vectors left."""
    sig = types.void(x, x_off, incx, w, w_off, ldw, c, c_off, k, n)

    def codegen(context, builder, signature, args):
        argtypes = signature.args
        dtype = argtypes[0].dtype

        def i64(index):
            return context.cast(builder, args[index], argtypes[index], types.int64)

        def data(index, offset):
            return _data(context, builder, argtypes[index], args[index], offset)

        ROWS.call(
            builder,
            ROWS.symbol(dtype, _wide_target(context), "row"),
            _row_function_type(context.get_value_type(dtype)),
            [data(0, i64(1)), i64(2), data(3, i64(4)), i64(5), data(6, i64(7)), i64(8), i64(9)],
        )
        return context.get_dummy_value()

    return sig, codegen


row_vectors = _target_int(
    _row_vectors, "Vectors (int64) of accumulators on the compile target (:data:`NV_WIDE` or :data:`NV_NARROW`)."
)


@njit(**JIT)
def gemv_wanted(k, n, itemsize):
    """Whether ``(1, k) @ (k, n)`` (alpha 1, beta 0, the matrix not transposed, elements of
    ``itemsize`` bytes) runs here rather than in OpenBLAS's gemv: ``FASTNN_MICRO_GEMM`` on, or auto
    on an AVX-512 compile target, for an output row of at most :data:`ONE_PASS_BYTES`, or a matrix
    of at most :data:`MULTI_PASS_BYTES`. Depends on the shape only, so a product takes the same
    kernel in every path."""
    mode = _mode()
    if mode == 0 or (mode == 1 and not _wide_compile_target()):
        return False
    return n * itemsize <= ONE_PASS_BYTES or k * n * itemsize <= MULTI_PASS_BYTES


__all__ = [
    "MULTI_PASS_BYTES",
    "NV_NARROW",
    "NV_WIDE",
    "ONE_PASS_BYTES",
    "ROWS",
    "gemv_wanted",
    "row_times_matrix",
    "row_vectors",
]
