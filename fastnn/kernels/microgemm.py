"""A register-blocked GEMM written in LLVM vector IR: ``C = op(A) @ B`` on output blocks.

OpenBLAS packs both operands on every call; at the shapes of fastnn's layers (a batch of 32-512
rows, inner and output sizes of 64-2048) that copy, and its generic blocking, leave a fifth to a
third of the CPU's peak unused, where PyTorch's oneDNN reaches it (benchmarks/RESULTS.md, "Session
28"). This kernel reads ``op(A)`` where it lies, its elements broadcast, and ``B``'s rows (``k x n``,
unit stride along ``n``) as vectors, in blocks of the inner sum that fit L1 (the first strip of rows
copies each block to the stack as it streams it, the next strips read the copy); a block of ``MR x NR``
outputs stays in vector registers over each such block (``MR * NV`` accumulators, ``NR = NV * VW``),
its partial sums kept in C between blocks. A panel whose width is not a multiple of the vectors'
ends in a masked vector (``llvm.masked.load`` / ``llvm.masked.store`` of its columns only, a
half-width one for at most half a vector's columns): no padded copy, nothing past C's or B's columns
touched.

Every output element is one fused multiply-add chain over ``k`` in order, the same whatever the
block, tile or thread that computes it: results do not depend on the tiling or the thread count.
They can differ from OpenBLAS's in the last bits (equal up to an inner size of 256 on OpenBLAS
0.3.34's SkylakeX kernels, another summation order beyond), so a product takes one or the other by
its shape only (:func:`micro_wanted`), the same in every path (eager, fused step, inference plan).

The register shape follows the compile target (Numba's CPU features, so a kernel cached or
prebuilt for another target gets that target's shape): with AVX-512, 16 float32 or 8 float64 a
vector and ``MR x NV = 6 x 4`` (24 of the 32 vector registers); otherwise 8 or 4 a vector and
``6 x 2`` (12 of 16); a panel one vector wide (a narrow product, or a wide one's last) takes
``12 x 1``. Used by default only where measured faster than OpenBLAS (AVX-512 targets;
:data:`~fastnn._config.MICRO_GEMM`, ``FASTNN_MICRO_GEMM``: auto, on, off), which depends on
OpenBLAS's kernel family (:func:`micro_wanted_shape`): against its 512-bit kernels (SkylakeX) large
products from 10 outputs wide (``A @ B`` and ``A.T @ B``), against its 256-bit ones (Haswell, Zen) most products from
10 outputs wide, ``A @ B.T`` from 32 rows.

Shapes: ``a`` (m, k), or (k, m) when ``trans_a``; ``b`` (k, n) with unit stride along n, or (n, k)
with unit stride along k when ``trans_b`` (its blocks copied transposed into the L1 buffer); ``c``
(m, n) with unit stride along n; one dtype, float32 or float64.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from .._config import JIT, JIT_INLINE, MICRO_GEMM_MODE
from ._outline import OutOfLine, element_bytes, vector_lanes
from .tiling import _linked_int64
from .views import pointer

#: rows of a register block (all targets)
MR = 6
#: rows of a one-vector-wide block (outputs at most one vector wide: a classifier's 10, a 16-wide layer):
#: 12 chains of multiply-adds where 6 left the units waiting on their latency (float32, one thread,
#: ``benchmarks/micro_gemm_grid.py --small`` on a Zen 5: 200x100 @ 100x10 5.2-5.4 -> 3.9-4.1 us, x.T @ grad
#: 100x10 (inner 200) 5.5-5.7 -> 4.2-4.3, no 10-16 wide product slower; benchmarks/RESULTS.md, session 36)
MR_ONE_VECTOR = 12


@register_jitable
def strip_rows(nv):
    """Rows of a register block of ``nv`` vectors: :data:`MR_ONE_VECTOR` for one, else :data:`MR` (from
    Python when the blocks are generated, and in ``micro_gemm_block``)."""
    return MR_ONE_VECTOR if nv == 1 else MR


#: vectors of a register block's row, by target: AVX-512 has 32 vector registers, AVX2 16
NV_WIDE, NV_NARROW = 4, 2

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _wide_target(context) -> bool:
    """Whether the compile target has AVX-512F (512-bit vectors, 32 registers)."""
    # Numba's target-machine feature string (NUMBA_CPU_FEATURES, or the host's); a Numba without
    # it reads as a narrow target: the AVX2 shape, and "auto" leaves the products to OpenBLAS
    features = getattr(context.codegen(), "_tm_features", "") or ""
    return "+avx512f" in features.split(",")


def _vector_width(context, dtype) -> int:
    """Lanes of one vector register of the target for ``dtype`` (a Numba float type)."""
    bits = 512 if _wide_target(context) else 256
    return bits // (32 if dtype == types.float32 else 64)


def _block_vectors(context) -> int:
    """Vectors in a register block's row on the compile target."""
    return NV_WIDE if _wide_target(context) else NV_NARROW


def _data(context, builder, array_type, value, offset):
    """Pointer to element ``offset`` (int64, elements) of an array's data."""
    base = context.make_array(array_type)(context, builder, value).data
    return builder.gep(base, [offset])


def _fma(builder, vec):
    """The ``llvm.fma`` intrinsic on vectors of type ``vec`` (declared once per module)."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{vec.count}{vec.element.intrinsic_name}"
    )


def _splat(builder, vec, value):
    """``value`` (a scalar of ``vec``'s element type) in every lane of a vector of type ``vec``."""
    lane = builder.insert_element(ir.Constant(vec, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(
        lane, ir.Constant(vec, None), ir.Constant(ir.VectorType(_I32, vec.count), [0] * vec.count)
    )


def _target_int(value_of, doc: str):
    """An intrinsic with no arguments returning ``value_of(context)`` (int64): a constant of the
    compile target (its vector registers, say), documented by ``doc``."""

    @intrinsic
    def constant(typingctx):
        def codegen(context, builder, signature, args):
            return ir.Constant(_I64, value_of(context))

        return types.int64(), codegen

    constant.__doc__ = doc
    return constant


def _masked(builder, name, vec, args):
    """A call of ``llvm.masked.load`` / ``llvm.masked.store`` (``name``) on vectors of type ``vec``."""
    ptr = vec.as_pointer()
    suffix = f"v{vec.count}{vec.element.intrinsic_name}"
    if name == "load":  # (pointer, alignment, mask, pass-through)
        fnty = ir.FunctionType(vec, [ptr, _I32, args[2].type, vec])
    else:  # (value, pointer, alignment, mask)
        fnty = ir.FunctionType(ir.VoidType(), [vec, ptr, _I32, args[3].type])
    # the typed-pointer mangling (LLVM 14); LLVM 15+ remangles it for opaque pointers when it reads the IR
    function = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{name}.{suffix}.p0{suffix}")
    return builder.call(function, args)


#: the last vector of a register block's row (:func:`_register_block`): whole, masked, or masked at half
#: the width (``lanes`` <= VW / 2: on a CPU that splits its widest vectors in two, such as Zen 4's
#: AVX-512, half the multiply-adds' cost; the same elsewhere)
WHOLE, MASKED, HALF = 0, 1, 2


def _emit_block(builder, real, width, nv, tail, pointers, values, mr):
    """Emit, at ``builder``, the register block of ``nv`` vectors of ``width`` lanes of ``real`` (an LLVM
    float type) for one strip of ``mr`` rows: ``C[i, j] (+)= sum_kk A[i*sa_i + kk*sa_k] * B[kk*ldb + j]``,
    stored at ``i*ldc + j`` for the first ``rows`` rows (1..mr; the missing rows read A's last row
    instead: no access outside A). ``pointers``: ``(pa, pb, pc, pp)``, A's, B's and C's first elements
    and the pack buffer's (None: no packing); ``values``: ``(sa_i, sa_k, ldb, ldc, k, rows, accumulate,
    lanes)``, int64 strides in elements, ``accumulate`` an i1. ``accumulate``: the sums start from C's
    values (a later block of the inner sum: the same chain of rounded multiply-adds as one pass), else
    from zero. With a pack buffer, B's vectors are also stored there, row ``kk`` at ``kk * nv * width``,
    for the next strips to read from L1. ``tail`` (:data:`MASKED`, :data:`HALF`): the last vector has
    ``lanes`` columns only (1..width, 1..width/2), read from B and C and written to C by masked loads
    and stores, nothing past them touched (its other lanes are zeros in the pack buffer);
    :data:`WHOLE`: ``lanes`` is ignored. Each element's sum is the same chain of multiply-adds in
    every variant."""
    pa, pb, pc, pp = pointers
    sa_i_v, sa_k_v, ldb_v, ldc_v, k_v, rows_v, acc_v, lanes_v = values
    align = ir.Constant(_I32, element_bytes(real))
    # vector j's type (the last one half as wide for HALF), and the mask of a masked last one
    vecs = [ir.VectorType(real, width)] * nv
    if tail == HALF:
        vecs[-1] = ir.VectorType(real, width // 2)
    mask = None
    if tail != WHOLE:  # lane < lanes
        count = vecs[-1].count
        index = ir.VectorType(_I64, count)
        limit = builder.insert_element(ir.Constant(index, None), lanes_v, ir.Constant(_I32, 0))
        limit = builder.shuffle_vector(
            limit, ir.Constant(index, None), ir.Constant(ir.VectorType(_I32, count), [0] * count)
        )
        mask = builder.icmp_unsigned("<", ir.Constant(index, list(range(count))), limit)

    def zero(j):
        return ir.Constant(vecs[j], [0.0] * vecs[j].count)

    def address(row, j):  # of vector j of a row (a pointer to its first element)
        return builder.bitcast(builder.gep(row, [ir.Constant(_I64, j * width)]), vecs[j].as_pointer())

    def load(row, j):
        if mask is not None and j == nv - 1:
            return _masked(builder, "load", vecs[j], [address(row, j), align, mask, zero(j)])
        return builder.load(address(row, j), align=1)

    def store(value, row, j):
        if mask is not None and j == nv - 1:
            _masked(builder, "store", vecs[j], [value, address(row, j), align, mask])
        else:
            builder.store(value, address(row, j), align=1)

    last = builder.sub(rows_v, ir.Constant(_I64, 1))
    row_starts, c_rows, present = [], [], []
    for i in range(mr):  # a missing row reads the last real one
        here = builder.icmp_signed("<", ir.Constant(_I64, i), rows_v)
        present.append(here)
        row = builder.select(here, ir.Constant(_I64, i), last)
        row_starts.append(builder.gep(pa, [builder.mul(row, sa_i_v)]))
        c_rows.append(builder.gep(pc, [builder.mul(ir.Constant(_I64, i), ldc_v)]))

    accumulators = [[cgutils.alloca_once_value(builder, zero(j)) for j in range(nv)] for _ in range(mr)]
    with builder.if_then(acc_v):
        for i in range(mr):
            with builder.if_then(present[i]):
                for j in range(nv):
                    builder.store(load(c_rows[i], j), accumulators[i][j])
    with cgutils.for_range(builder, k_v) as loop:
        kk = loop.index
        b_row = builder.gep(pb, [builder.mul(kk, ldb_v)])
        b_vectors = [load(b_row, j) for j in range(nv)]
        if pp is not None:  # whole vectors (a masked one's other lanes are zeros)
            packed_row = builder.gep(pp, [builder.mul(kk, ir.Constant(_I64, nv * width))])
            for j in range(nv):
                builder.store(b_vectors[j], address(packed_row, j), align=1)
        a_step = builder.mul(kk, sa_k_v)
        for i in range(mr):
            scalar = builder.load(builder.gep(row_starts[i], [a_step]))
            for j in range(nv):
                slot = accumulators[i][j]
                broadcast = _splat(builder, vecs[j], scalar)
                fma = _fma(builder, vecs[j])
                builder.store(builder.call(fma, [broadcast, b_vectors[j], builder.load(slot)]), slot)
    for i in range(mr):
        with builder.if_then(present[i]):
            for j in range(nv):
                store(builder.load(accumulators[i][j]), c_rows[i], j)


def _block_function_type(real) -> ir.FunctionType:
    """``void (A*, sa_i, sa_k, B*, ldb, C*, ldc, k, rows, i1 accumulate, pack*, nv, lanes)``."""
    ptr = real.as_pointer()
    return ir.FunctionType(
        ir.VoidType(), [ptr, _I64, _I64, ptr, _I64, ptr, _I64, _I64, _I64, ir.IntType(1), ptr, _I64, _I64]
    )


def _define_blocks(module, symbol: str, real, wide: bool, variant: str) -> None:
    """Define in ``module`` the function ``symbol`` (external linkage, :func:`_block_function_type`): the
    register block of ``nv`` vectors (1..4; another count reads as 1) whose last vector has ``lanes``
    columns (whole when the vector's lanes, masked when more than half of them, a masked half-width
    vector otherwise), for ``rows`` rows: the twelve variants of :func:`_emit_block` one branch each
    (``strip_rows(nv)`` rows), and for one vector and at most :data:`MR` rows three more of ``MR`` rows
    (a short strip does the work of its rows, not of ``MR_ONE_VECTOR``); ``variant`` "pack": B's
    vectors also stored to the pack buffer."""
    width = vector_lanes(real, wide)
    function = ir.Function(module, _block_function_type(real), symbol)
    pa, sa_i, sa_k, pb, ldb, pc, ldc, k, rows, accumulate, pp, nv, lanes = function.args
    entry = function.append_basic_block("entry")
    builder = ir.IRBuilder(entry)

    def const(value):
        return ir.Constant(_I64, value)

    over_half = builder.icmp_signed(">", builder.mul(lanes, const(2)), const(width))
    tail = builder.select(
        builder.icmp_signed("==", lanes, const(width)),
        const(WHOLE),
        builder.select(over_half, const(MASKED), const(HALF)),
    )
    vectors = const(1)
    for count in (2, 3, 4):
        vectors = builder.select(builder.icmp_signed("==", nv, const(count)), const(count), vectors)
    tails, counts = (WHOLE, MASKED, HALF), (1, 2, 3, 4)
    short_case = len(tails) * len(counts)  # the MR-row one-vector blocks' cases: short_case + tail
    case = builder.add(builder.mul(tail, const(len(counts))), builder.sub(vectors, const(1)))
    short = builder.and_(  # one vector, a strip of at most MR rows
        builder.icmp_signed("==", vectors, const(1)), builder.icmp_signed("<=", rows, const(MR))
    )
    case = builder.select(short, builder.add(const(short_case), tail), case)
    pointers = (pa, pb, pc, pp if variant == "pack" else None)
    values = (sa_i, sa_k, ldb, ldc, k, rows, accumulate, lanes)
    cases = []
    for tail_kind in tails:
        for count in counts:
            block = function.append_basic_block(f"block_{tail_kind}_{count}")
            builder.position_at_end(block)
            _emit_block(builder, real, width, count, tail_kind, pointers, values, strip_rows(count))
            builder.ret_void()
            cases.append((tail_kind * len(counts) + count - 1, block))
    for tail_kind in tails:
        block = function.append_basic_block(f"block_{tail_kind}_1_short")
        builder.position_at_end(block)
        _emit_block(builder, real, width, 1, tail_kind, pointers, values, MR)
        builder.ret_void()
        cases.append((short_case + tail_kind, block))
    builder.position_at_end(entry)  # the blocks' allocas are in the entry block: the dispatch ends it
    switch = builder.switch(case, cases[0][1])
    for value, block in cases:
        switch.add_case(const(value), block)


#: the register blocks, compiled once a process and called by name (:mod:`._outline`): each copy in a
#: caller was optimised and compiled again with it (~2/3 of a GEMM-using library's code)
BLOCKS = OutOfLine("fastnn_microgemm_block_v2_", ("nopack", "pack"), _define_blocks)
_define_512, _define_256 = BLOCKS.definer(True), BLOCKS.definer(False)


@njit(**JIT)
def _blocks_512(like):
    """Compiled for its library: it defines the 512-bit register blocks of ``like``'s dtype."""
    _define_512(like)


@njit(**JIT)
def _blocks_256(like):
    """Compiled for its library: it defines the 256-bit register blocks of ``like``'s dtype."""
    _define_256(like)


BLOCKS.hosts(_blocks_512, _blocks_256)


@intrinsic
def _run_block(typingctx, nv, lanes, a, a_off, sa_i, sa_k, b, b_off, ldb, c, c_off, ldc, k, rows, accumulate, pack):
    """The register block of ``nv`` vectors (1..4) for one strip of up to ``strip_rows(nv)`` rows
    (:func:`_emit_block`), its last vector masked to ``lanes`` columns when that is fewer than the
    vector's (a half-width vector for at most half of them): a call of the out-of-line blocks
    (:data:`BLOCKS`). Offsets and strides
    in elements (int64); ``pack``: an array, or None."""
    sig = types.void(nv, lanes, a, a_off, sa_i, sa_k, b, b_off, ldb, c, c_off, ldc, k, rows, accumulate, pack)
    packing = not isinstance(pack, types.NoneType)

    def codegen(context, builder, signature, args):
        argtypes = signature.args
        dtype = argtypes[2].dtype
        real = context.get_value_type(dtype)

        def i64(index):
            return context.cast(builder, args[index], argtypes[index], types.int64)

        def data(index, offset):
            return _data(context, builder, argtypes[index], args[index], offset)

        pp = data(15, ir.Constant(_I64, 0)) if packing else ir.Constant(real.as_pointer(), None)
        accumulate_bit = context.cast(builder, args[14], argtypes[14], types.boolean)
        strides = (i64(4), i64(5))
        BLOCKS.call(
            builder,
            BLOCKS.symbol(dtype, _wide_target(context), "pack" if packing else "nopack"),
            _block_function_type(real),
            [data(2, i64(3)), *strides, data(6, i64(7)), i64(8), data(9, i64(10)), i64(11), i64(12), i64(13)]
            + [accumulate_bit, pp, i64(0), i64(1)],
        )
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def vector_width(typingctx, like):
    """Lanes (int64) of one vector of the compile target for ``like``'s dtype (an array)."""
    sig = types.int64(like)

    def codegen(context, builder, signature, args):
        return ir.Constant(_I64, _vector_width(context, signature.args[0].dtype))

    return sig, codegen


block_vectors = _target_int(_block_vectors, "Vectors (int64) in a register block's row on the compile target (NV).")


@intrinsic
def _wide_compile_target(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(_wide_target(context)))

    return types.boolean(), codegen


_micro_gemm_mode = _linked_int64("fastnn_micro_gemm_mode", MICRO_GEMM_MODE)


@intrinsic
def _mode(typingctx):
    return _micro_gemm_mode(typingctx)


#: OpenBLAS's kernel families (``blas.CORE_NAME``, lower case) whose GEMM kernels use 512-bit vectors
#: (AVX-512), against which :data:`BLAS_512`'s rule was measured; every other family, or an unknown
#: one, is :data:`BLAS_256` (Haswell, Zen, Sandybridge, ...: AVX2 kernels at half the width)
BLAS_512_FAMILIES = ("skylakex", "cooperlake", "sapphirerapids")
#: ``family`` codes of :func:`micro_wanted` (int64, a process constant: see :func:`blas_family`)
BLAS_256, BLAS_512 = 0, 1

#: BLAS_512: products with fewer multiply-adds stay with OpenBLAS (its small-matrix kernels skip
#: packing up to 100**3: below ~10**6 they won at most tile shapes, benchmarks/micro_gemm_grid.py)
MICRO_MIN_MACS = 1 << 20
#: ... or fewer outputs a row than this: up to 8 (half of AVX-512's 16 float32 lanes) a row is one
#: half-width vector, too few multiply-add chains for its latency (float32 1.2-1.7x OpenBLAS's time
#: from 10**6 multiply-adds); from 10 (a classifier's outputs) float32 ran at 0.95-1.03 of its time,
#: float64 at 0.55-0.97, wider outputs of any width (the last vector masked) at 0.77-1.03, median ~0.93
#: (benchmarks/micro_gemm_grid.py, session 31: until then only whole vectors from 32 wide)
MICRO_512_MIN_N = 10


def blas_family(core_name: str) -> int:
    """The ``family`` code (:data:`BLAS_512` or :data:`BLAS_256`) of OpenBLAS's kernel family ``core_name``
    (``openblas_get_corename``: "SkylakeX", "Haswell", ...; "" when unknown)."""
    return BLAS_512 if core_name.strip().lower() in BLAS_512_FAMILIES else BLAS_256


@njit(**JIT)
def micro_wanted(m, n, k, trans_b, family):
    """Whether an ``(m, k) @ op(B)`` product (``op(B)`` is ``k x n``: ``B``, or ``B.T`` when ``trans_b``;
    alpha 1, beta 0) runs here rather than in OpenBLAS: ``FASTNN_MICRO_GEMM`` on, or auto on an
    AVX-512 compile target, for the shapes of :func:`micro_wanted_shape` against OpenBLAS's kernel
    ``family`` (int64: :data:`BLAS_512` or :data:`BLAS_256`, this process's :data:`.blas.OPENBLAS_FAMILY`).
    Depends on the shape and process constants only, so a product takes the same kernel in every path."""
    mode = _mode()
    if mode == 0 or (mode == 1 and not _wide_compile_target()):
        return False
    return micro_wanted_shape(m, n, k, trans_b, family)


@njit(**JIT)
def micro_wanted_shape(m, n, k, trans_b, family):
    """The shape half of :func:`micro_wanted` (whatever ``FASTNN_MICRO_GEMM`` says): whether an
    ``(m, k) @ op(B)`` product with ``n`` outputs a row is one the register-blocked kernel was
    measured faster at, against OpenBLAS's kernel ``family`` (int64 code, see :func:`blas_family`).

    :data:`BLAS_512` (SkylakeX-type kernels): ``B`` not transposed, at least :data:`MICRO_MIN_MACS`
    multiply-adds (below, OpenBLAS's small-matrix kernels win), ``m`` >= 2 and ``n`` >= :data:`MICRO_512_MIN_N`
    (any width: the last vector of a row is masked). :data:`BLAS_256`: see :func:`_wanted_against_256`."""
    if family == BLAS_512:
        return not trans_b and m >= 2 and n >= MICRO_512_MIN_N and m * n * k >= MICRO_MIN_MACS
    return _wanted_against_256(m, n, k, trans_b)


#: BLAS_256 (OpenBLAS's AVX2 kernels, half the vector width of the register blocks here): narrower
#: outputs stay with OpenBLAS (2 wide: 1.2-1.7x its time from 32 rows; benchmarks/micro_gemm_grid.py
#: --small on a Zen 5, session 36)
MICRO_256_MIN_N = 10
#: ... from this width every product of 2+ rows (float32 0.3-0.92 of OpenBLAS's time, float64 0.27-0.91)
MICRO_256_WIDE_N = 16
#: ... narrower ones (10-15 wide) with this many rows or more only with an inner size of at least
#: :data:`MICRO_256_NARROW_MIN_K` (float32 at k 4-8: 1.02-1.14x OpenBLAS's time; fewer rows: 0.84-0.94)
MICRO_256_ROWS = 32
MICRO_256_NARROW_MIN_K = 10
#: ``A @ B.T`` (each block of B copied transposed, one element at a time) only with at least this many
#: rows to share the copy (m <= 8: 1.1-1.9x OpenBLAS's time; 32+: 0.52-0.88 from 16 wide), and a
#: narrow width (10-15) only with an inner size of at least :data:`MICRO_256_NT_NARROW_MIN_K`
#: (float32 k 10: 1.04x, k 32+: 0.59-0.93)
MICRO_256_NT_MIN_M = 32
MICRO_256_NT_NARROW_MIN_K = 32


@njit(**JIT)
def _wanted_against_256(m, n, k, trans_b):
    """:func:`micro_wanted_shape` against OpenBLAS's 256-bit (AVX2) kernel families, measured on a Zen 5
    (OpenBLAS 0.3.34's Haswell kernels, benchmarks/micro_gemm_grid.py and its ``--small``, ``--partial``
    and ``--float64``, with the masked last vector; session 36): products of 2+ rows and at least
    :data:`MICRO_256_WIDE_N` outputs a row, or :data:`MICRO_256_MIN_N` with fewer than
    :data:`MICRO_256_ROWS` rows or an inner size of :data:`MICRO_256_NARROW_MIN_K`; ``A @ B.T`` from
    :data:`MICRO_256_NT_MIN_M` rows, a narrow one with an inner size of :data:`MICRO_256_NT_NARROW_MIN_K`.
    Every product it takes in those grids ran faster than OpenBLAS's (float32 and float64)."""
    if m < 2 or n < MICRO_256_MIN_N:
        return False
    wide = n >= MICRO_256_WIDE_N
    if trans_b:
        return m >= MICRO_256_NT_MIN_M and (wide or k >= MICRO_256_NT_NARROW_MIN_K)
    return wide or m < MICRO_256_ROWS or k >= MICRO_256_NARROW_MIN_K


#: bytes of the L1-resident copy of a panel's block of B (on the kernel's stack)
PANEL_BYTES = 32 * 1024


#: alignment (bytes) of that copy: a cache line, so that no vector read from it or stored to it is split
PANEL_ALIGN = 64


@intrinsic
def _panel_buffer(typingctx, like):
    """The address (int64) of :data:`PANEL_BYTES` bytes aligned to :data:`PANEL_ALIGN`, in the calling
    function's stack frame (no allocation), valid until it returns, for ``like``'s dtype (an array)."""

    def codegen(context, builder, signature, args):
        element = context.get_data_type(like.dtype)
        size = context.get_constant(types.intp, PANEL_BYTES // context.get_abi_sizeof(element))
        with builder.goto_entry_block():
            buffer = builder.alloca(element, size=size)
            buffer.align = PANEL_ALIGN
        return builder.ptrtoint(buffer, _I64)

    return types.int64(like), codegen


@njit(**JIT_INLINE)
def transpose_rows(b, bt, r0, n, k0, k, ld):
    """``bt[kk * ld + j] = b[r0 + j, k0 + kk]`` for ``kk < k``, ``j < n``: columns ``k0:k0 + k`` of rows
    ``r0:r0 + n`` of ``b`` (2-D, unit stride along its rows), transposed into the flat ``bt`` (k x n,
    row stride ``ld`` >= n; the elements between ``n`` and ``ld`` are left as they are). A block of
    ``B.T`` from ``B``'s rows, for the GEMMs that read ``op(B) = B.T`` as ``k x n`` rows (this module's
    kernel, and blas's small ``A @ B.T``)."""
    # (unsigned bounds: no negative-index wraparound in the loops, see dense._bias_activate_block)
    i0, j0, n_u, k_u, ld_u = np.uint64(r0), np.uint64(k0), np.uint64(n), np.uint64(k), np.uint64(ld)
    for j in range(n_u):  # along b's rows (unit stride): a column of b at a time thrashes L1 at large k
        for kk in range(k_u):
            bt[kk * ld_u + j] = b[i0 + j, j0 + kk]


@njit(**JIT)
def micro_gemm_block(trans_a, a, b, c, r0, r1, c0, c1, trans_b=False):
    """``C[r0:r1, c0:c1] = op(A)[r0:r1, :] @ op(B)[:, c0:c1]`` (see the module docstring for shapes;
    ``op(B)`` is ``B.T`` when ``trans_b``: ``b`` (n, k) with unit stride along k).

    Panels of ``NR`` columns of op(B), in blocks of ``kc`` inner rows that fit L1 (:data:`PANEL_BYTES`),
    swept by strips of ``MR`` rows of op(A) (:data:`MR_ONE_VECTOR` for a panel one vector wide). With
    ``B`` not transposed, the first strip reads the block from B and leaves a copy on the stack for the
    next ones; a block of ``B.T`` is copied first (transposed). A panel whose width is not a multiple
    of the vectors' has its last vector masked (loads and stores of that many columns only). Nothing
    outside the operands is read or written.
    """
    m = r1 - r0
    n = c1 - c0
    if m <= 0 or n <= 0:
        return
    k = b.shape[1] if trans_b else b.shape[0]
    itemsize = c.itemsize
    lda = a.strides[0] // itemsize
    ldb = b.strides[0] // itemsize
    ldc = c.strides[0] // itemsize
    sa_i, sa_k = (np.int64(1), np.int64(lda)) if trans_a else (np.int64(lda), np.int64(1))
    width = vector_width(c)
    nr = block_vectors() * width
    kc = PANEL_BYTES // (nr * itemsize)
    copy = carray(pointer(_panel_buffer(c)), kc * nr, c.dtype)
    zero = np.int64(0)
    for p0 in range(c0, c1, nr):
        cols = min(nr, c1 - p0)
        nv = (cols + width - 1) // width
        padded = nv * width
        lanes = cols - (nv - 1) * width  # of the last vector (masked when fewer than width)
        mr = strip_rows(nv)
        for k0 in range(0, k, kc):
            depth = min(kc, k - k0)
            later = k0 > 0
            a_k = k0 * sa_k
            first = r0
            if not trans_b:  # the first strip reads B and leaves the copy (none for one strip)
                rows = min(mr, m)
                a_off, b_off, c_off = r0 * sa_i + a_k, k0 * ldb + p0, r0 * ldc + p0
                if m > mr:
                    _run_block(nv, lanes, a, a_off, sa_i, sa_k, b, b_off, ldb, c, c_off, ldc, depth, rows, later, copy)
                else:
                    _run_block(nv, lanes, a, a_off, sa_i, sa_k, b, b_off, ldb, c, c_off, ldc, depth, rows, later, None)
                first = r0 + mr
            else:
                transpose_rows(b, copy, p0, cols, k0, depth, padded)
            for i0 in range(first, r1, mr):
                rows = min(mr, r1 - i0)
                a_off, c_off = i0 * sa_i + a_k, i0 * ldc + p0
                _run_block(nv, lanes, a, a_off, sa_i, sa_k, copy, zero, padded, c, c_off, ldc, depth, rows, later, None)


__all__ = [
    "BLAS_256",
    "BLAS_512",
    "BLAS_512_FAMILIES",
    "MICRO_MIN_MACS",
    "MICRO_512_MIN_N",
    "MICRO_256_MIN_N",
    "MICRO_256_WIDE_N",
    "MICRO_256_ROWS",
    "MICRO_256_NARROW_MIN_K",
    "MICRO_256_NT_MIN_M",
    "MICRO_256_NT_NARROW_MIN_K",
    "BLOCKS",
    "MR",
    "MR_ONE_VECTOR",
    "HALF",
    "MASKED",
    "WHOLE",
    "blas_family",
    "micro_gemm_block",
    "micro_wanted",
    "micro_wanted_shape",
    "strip_rows",
    "transpose_rows",
]
