"""Progress display for fit(): a tqdm bar per epoch in a terminal or notebook, one line per
epoch when output goes to a file or pipe (log files get no per-batch lines)."""

from __future__ import annotations

import sys


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 - any IPython oddity means "not a notebook"
        return False


def format_metrics(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items() if isinstance(v, float))


class EpochProgress:
    """``verbose``: 0 silent; 1 a bar per epoch (a line per epoch when not interactive); 2 a line
    per epoch."""

    def __init__(self, verbose: int, epochs: int, batches: int, stream=None):
        self.verbose, self.epochs, self.batches = verbose, epochs, batches
        self.stream = stream if stream is not None else sys.stderr
        interactive = _in_notebook() or getattr(self.stream, "isatty", lambda: False)()
        self.use_bar = verbose == 1 and interactive
        self.bar = None

    def epoch_begin(self, epoch: int, done: int = 0) -> None:
        """Open the epoch's bar; ``done``: batches an interrupted fit already ran in this epoch (a
        resumed epoch's bar starts there and ends on the epoch's count, as the uninterrupted one)."""
        if self.use_bar:
            if _in_notebook():
                from tqdm.notebook import tqdm
            else:
                from tqdm import tqdm
            self.bar = tqdm(
                total=self.batches,
                initial=done,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
            )

    def batch_end(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n == self.batches or self.bar.n % 8 == 0:
                self.bar.set_postfix_str(f"loss: {loss:.4g}", refresh=False)

    def epoch_end(self, epoch: int, logs: dict, seconds: float, complete: bool = False) -> None:
        """Close the epoch's bar (or print its line); ``complete``: every batch the epoch trains ran
        (its data was not cut short nor the fit stopped), so the bar ends full, on the batches it
        counted: a last batch of one skipped after its ``on_batch_begin`` (a callback unfroze a
        BatchNorm there) or trained after a freeze leaves the count the epoch began with, and an
        epoch of unknown length has none (Keras sets its target to the batches seen)."""
        if self.bar is not None:
            if complete and self.bar.total != self.bar.n:
                self.bar.total = self.bar.n
            self.bar.set_postfix_str(format_metrics(logs), refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            print(
                f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {format_metrics(logs)}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
