"""Placeholder for the CUDA twins of :mod:`fastnn.kernels.recurrent` (same names and arguments):
they are not written yet, so a recurrent layer on "cuda" raises instead of the whole CUDA kernel
namespace failing to import. Replace this file with the @cuda.jit launchers."""
from __future__ import annotations


def _pending(name: str):
    raise NotImplementedError(f"fastnn.kernels.cuda.recurrent.{name} (the CUDA twin of the CPU kernel) is not "
                              f"written yet; run recurrent layers on device='cpu'")


def recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, gates, aux, h_prev, c_prev, hw, y, h_n, c_n,
                      cell, reverse, column):
    _pending("recurrent_forward")


def recurrent_backward(x, w_ih, w_hh, lengths, gates, aux, h_prev, c_prev, grad_y, grad_h_n, grad_c_n, dgates,
                       dgates_hh, dh, dc, grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_h0, grad_c0,
                       cell, reverse, column, accumulate_x, need_grad_x):
    _pending("recurrent_backward")


def swap_leading_axes(src, dst):
    _pending("swap_leading_axes")
