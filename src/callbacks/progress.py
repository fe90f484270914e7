"""The progress bar of a run: Lightning's RichProgressBar, redrawn a few times a second, its numbers read as often.

Lightning's RichProgressBar redraws 100 times a second in a background thread (measured here: 3% of a core,
taken from the training loop's Python while it holds the GIL) and reads the progress-bar metrics after every
training step; reading a logged tensor's value waits for the device to finish its queued work (on a GPU, a
synchronisation per step). Here both happen at `refresh_rate` times a second: the step never waits for the bar.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """`RichProgressBar` whose metrics (loss, ...) are read at most `refresh_rate` times a second during training.

    Args:
        refresh_rate: redraws (and metric reads) per second; 0 hides the bar.
        leave, theme, console_kwargs: as RichProgressBar's.
    """

    def __init__(self, refresh_rate: int = 4, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._metrics: dict = {}
        self._metrics_read_at = float("-inf")
        self._in_train_batch = False

    def get_metrics(self, trainer, pl_module) -> dict:
        now = time.monotonic()
        if not self._in_train_batch or now - self._metrics_read_at >= 1 / max(self.refresh_rate, 1e-9):
            self._metrics, self._metrics_read_at = super().get_metrics(trainer, pl_module), now
        return self._metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._in_train_batch = True  # reads between redraws return the numbers of the last read
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._in_train_batch = False
