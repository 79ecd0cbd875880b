"""Callbacks for ``fit``: :class:`Callback` (the base class), :class:`History`,
:class:`EarlyStopping`, :class:`ModelCheckpoint` and the progress bar, as in Keras.

A callback overrides any of ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch,
logs)``, ``on_train_batch_begin/end(batch, logs)`` (and ``on_test_begin/end``); it reads
``self.model`` and ``self.params`` and may set ``self.model.stop_training = True``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
from tqdm.auto import tqdm  # a runtime dependency (pyproject.toml)

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "ProgbarLogger"]


class Callback:
    """Base class of the callbacks (``keras.callbacks.Callback``)."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...


class History(Callback):
    """What ``fit`` returns: ``history.history`` maps each log name to its value per epoch."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"<History epochs={len(self.epoch)} keys={list(self.history)}>"


def _monitor_op(monitor, mode, owner):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        name = monitor[4:] if monitor.startswith("val_") else monitor
        mode = "max" if name in ("acc", "accuracy") or name.endswith("accuracy") else "min"
    return np.greater if mode == "max" else np.less


class EarlyStopping(Callback):
    """Stop training when ``monitor`` stops improving (Keras 3's rules).

    An epoch improves when ``current`` beats the best by more than ``min_delta``; after
    ``patience`` epochs without improvement training stops. With ``restore_best_weights``
    the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):  # fmt: skip
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.monitor_op = _monitor_op(monitor, mode, "EarlyStopping")
        self.min_delta = abs(min_delta) if self.monitor_op is np.greater else -abs(min_delta)

    def _is_improvement(self, current, reference):
        if reference is None:
            return True
        return bool(self.monitor_op(current - self.min_delta, reference))

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping: the monitored value {self.monitor!r} is not in the logs "
                f"(available: {', '.join(logs or {})})",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    f"Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) at the end of every epoch, or of the best ones.

    ``filepath`` may contain ``{epoch}`` (1-based) and log names, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.rnncore"``. The whole model goes through
    ``model.save`` (the suffix picks the format: ``.keras``/``.h5`` Keras's, else rnncore's
    own); ``save_weights_only`` writes ``model.save_weights``.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):  # fmt: skip
        super().__init__()
        if save_freq != "epoch":
            raise NotImplementedError("ModelCheckpoint: only save_freq='epoch' is supported")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.monitor_op = _monitor_op(monitor, mode, "ModelCheckpoint")
        self.best = initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(
                    f"ModelCheckpoint: the monitored value {self.monitor!r} is not in the logs",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            if self.best is not None and not self.monitor_op(current, self.best):
                return
            if self.verbose > 0:
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to "
                    f"{current:.5f}, saving model to {path}"
                )
            self.best = current
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


def _format_logs(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class ProgbarLogger(Callback):
    """A per-epoch progress bar with the running loss and metrics (``verbose=1``; tqdm), or
    one line per epoch (``verbose=2``)."""

    def __init__(self, verbose=1, file=None):
        super().__init__()
        self.verbose = verbose
        self.file = file
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._written = False
        epochs = self.params.get("epochs", "?")
        if self.verbose == 1:
            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"Epoch {epoch + 1}/{epochs}",
                unit="batch",
                file=self.file or sys.stdout,
                leave=True,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(_format_logs(logs or {}), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        text = _format_logs(logs or {})
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.close()
            self._bar = None
        elif self.verbose:
            epochs = self.params.get("epochs", "?")
            print(f"Epoch {epoch + 1}/{epochs} - {text}", file=self.file or sys.stdout, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CallbackList:
    """Calls every callback in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            for c in self.callbacks:
                getattr(c, name)(*args, **kwargs)

        return call


def is_finite(value) -> bool:
    return value is not None and math.isfinite(value)
