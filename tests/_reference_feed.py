"""References of fit's in-call batch feed (fastnn.kernels.step_feed)."""

import numpy as np


def gather_batch(x_all, y_all, order, lo, hi):
    """(x, y): the rows ``order[lo:hi]`` of the data set, as float64 / the targets' dtype."""
    rows = np.asarray(order[lo:hi])
    return np.asarray(x_all, np.float64)[rows], np.asarray(y_all)[rows]
