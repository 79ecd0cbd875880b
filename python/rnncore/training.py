"""Training for :class:`rnncore.Sequential`: ``compile``, ``fit``, ``evaluate``,
``train_on_batch``, ``test_on_batch`` (Keras's signatures and logs).

One step: each layer's ``forward_train`` (the core's training forward, keeping its
workspace; dropout active) -> the loss and dL/d(output) -> each layer's ``backward`` in
reverse (the core's backward) -> ``optimizer.apply_gradients``. The update comes last and is
all or nothing, so an error anywhere in a step leaves the weights as they were. A batch
whose loss or gradients are not finite is not applied: training stops with a
``RuntimeWarning`` that says so. Data are checked before the first step (sample counts,
target shape against the loss and the model's output), so bad input fails with a
``ValueError`` before any weight changes.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import callbacks as callbacks_module
from . import losses, metrics, optimizers, utils
from .layers._base import require_default
from .metrics import compile_metrics, update_metrics

__all__ = ["Trainer"]


def _n(a) -> int:
    return int(np.shape(a)[0]) if np.ndim(a) else 0


class Trainer:
    """The training methods of :class:`rnncore.Sequential` (a mixin)."""

    stop_training = False
    optimizer = None
    _loss = None
    _metrics = None
    _weighted_metrics = ()
    history = None

    # ---- compile ----------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
                auto_scale_loss=True):  # fmt: skip
        """Set the optimizer (object or name: ``"sgd"``, ``"adam"``, ``"rmsprop"``), the loss
        (``"mse"``, ``"mae"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
        ``"sparse_categorical_crossentropy"`` or a :mod:`rnncore.losses` object) and metrics
        (``"accuracy"``, ``"mae"``, ``"mse"``)."""
        require_default("compile", loss_weights=(loss_weights, None),
                        steps_per_execution=(steps_per_execution, 1))  # fmt: skip
        if loss is None:
            raise ValueError(f"{self.name}.compile: a loss is required, e.g. loss='mse'")
        opt = optimizers.get(optimizer)
        loss_obj = losses.get(loss)
        specs, weighted = list(metrics or []), list(weighted_metrics or [])
        compile_metrics(specs, weighted, loss_obj)  # unknown names fail here
        self.optimizer, self._loss, self._metrics = opt, loss_obj, specs
        self._weighted_metrics = weighted
        self._compile_config = {"optimizer": optimizer, "loss": loss, "metrics": metrics,
                                "weighted_metrics": weighted_metrics}  # fmt: skip
        self.stop_training = False

    @property
    def loss(self):
        return self._loss

    @property
    def compiled(self) -> bool:
        return self._loss is not None

    def _require_compiled(self, what):
        if self._loss is None or self.optimizer is None:
            raise RuntimeError(
                f"{self.name}.{what}: compile the model first, e.g. "
                f"model.compile(optimizer='adam', loss='mse')"
            )

    # ---- data checks ------------------------------------------------------------------

    def _output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
        if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (tuple, list)):
            raise NotImplementedError(
                f"{self.name}: the model has several outputs (return_state=True or "
                f"Bidirectional merge_mode=None last); fit/evaluate need one output"
            )
        return shape

    def _check_data(self, x, y, what):
        if not self._layers:
            raise ValueError(f"{self.name}.{what}: the model has no layers")
        if x is None or y is None:
            raise ValueError(f"{self.name}.{what}: both x and y are required")
        x = np.asarray(x)
        y = np.asarray(y)
        if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
            raise ValueError(
                f"{self.name}.{what}: x and y must be numeric arrays, got dtypes "
                f"{x.dtype} and {y.dtype}"
            )
        for name, a in (("x", x), ("y", y)):
            if a.dtype.kind == "c":
                raise TypeError(
                    f"{self.name}.{what}: {name} must be real numbers, got complex values "
                    f"(casting them would discard the imaginary part)"
                )
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"{self.name}.{what}: x and y must have a sample axis")
        if len(x) != len(y):
            raise ValueError(
                f"{self.name}.{what}: x and y must have the same number of samples, got "
                f"{len(x)} (x.shape={x.shape}) and {len(y)} (y.shape={y.shape})"
            )
        if len(x) == 0:
            raise ValueError(f"{self.name}.{what}: no samples")
        if not self.built:
            self.build((None,) + x.shape[1:])
        out_shape = self._output_shape((None,) + x.shape[1:])
        self._loss.check_target((None,) + y.shape[1:], out_shape)
        if isinstance(self._loss, losses.SparseCategoricalCrossentropy):
            self._loss.check_labels(y, out_shape[-1])
        if x.dtype.kind not in "biu":  # integers stay exact: token ids for an Embedding
            x = x.astype(self.dtype, copy=False)
        return x, y, out_shape

    def _make_metrics(self, out_shape):
        return compile_metrics(self._metrics, self._weighted_metrics, self._loss, out_shape[-1])

    def _sample_weight(self, y, out_shape, sample_weight, class_weight, what):
        """The per-sample (or per-timestep) loss weights of ``(x, y)``, checked, or None:
        ``sample_weight`` or ``class_weight`` turned into it (Keras: not both)."""
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError(
                    f"{self.name}.{what}: give sample_weight or class_weight, not both"
                )
            if len(out_shape) > 2:  # (Keras would take (B, T) labels for one-hot rows)
                raise ValueError(
                    f"{self.name}.{what}: class_weight needs one class per sample, but the "
                    f"output {tuple(out_shape)} has one per timestep: give sample_weight of "
                    f"shape (samples, timesteps) instead"
                )
            return losses.class_weight_to_sample_weights(y, class_weight)
        if sample_weight is None:
            return None
        w = losses.as_weights(sample_weight, f"{self.name}.{what}: sample_weight")
        if w.ndim == 0 or len(w) != len(y):
            raise ValueError(
                f"{self.name}.{what}: sample_weight must have one entry per sample "
                f"({len(y)}), got shape {w.shape}"
            )
        values = np.broadcast_to(0.0, (len(y),) + tuple(out_shape[1:-1]))
        losses.reduce_weighted(values, w)  # one that does not fit the loss fails here
        return w

    # ---- one step ---------------------------------------------------------------------

    def _forward_train(self, x, rng):
        mask = None
        for layer in self._layers:
            if type(x) is tuple:
                raise NotImplementedError(
                    f"{self.name}: a layer returned several outputs inside the model"
                )
            x, mask = layer.forward_train(x, mask, rng)
            if isinstance(mask, list):
                mask = mask[0]
        return x

    def _backward(self, d_out):
        for layer in reversed(self._layers):
            d_out = layer.backward(d_out)
        return d_out

    def _gradients(self):
        trainable = {id(v) for v in self.trainable_weights}
        return [
            (g, v)
            for layer in self._layers
            for v, g in zip(layer.weights, layer.gradients)
            if g is not None and id(v) in trainable
        ]

    def _train_step(self, x, y, rng, metric_objs, sample_weight=None):
        """One update; returns the batch loss, or None when it was not applied (non-finite)."""
        out = self._forward_train(x, rng)
        loss, d_out = self._loss.value_and_gradient(y, out, sample_weight)
        if not math.isfinite(loss):
            return loss, False
        update_metrics(metric_objs, y, out, sample_weight)
        self._backward(d_out)
        try:
            self.optimizer.apply_gradients(self._gradients())
        except FloatingPointError:
            return loss, False
        finally:
            for layer in self._layers:
                layer._train_cache = None  # release the workspaces
        return loss, True

    # ---- fit --------------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):  # fmt: skip
        """Train for ``epochs`` passes over ``(x, y)`` in batches; returns a :class:`History`.

        ``validation_split`` holds out the last fraction of the samples (before shuffling, as
        Keras); ``validation_data=(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``
        gives them explicitly. ``sample_weight`` (per sample, or per sample and timestep) or
        ``class_weight`` (``{class: weight}``, training data only) weigh each sample's loss.
        ``verbose``: 0 silent, 1 (``"auto"``) a progress bar per epoch, 2 one line per epoch.
        """
        self._require_compiled("fit")
        require_default("fit", steps_per_epoch=(steps_per_epoch, None),
                        validation_steps=(validation_steps, None),
                        validation_freq=(validation_freq, 1))  # fmt: skip
        batch_size = _batch_size(batch_size, "fit")
        x, y, out_shape = self._check_data(x, y, "fit")
        sw = self._sample_weight(y, out_shape, sample_weight, class_weight, "fit")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError(
                    f"{self.name}.fit: validation_data must be (x_val, y_val) or "
                    f"(x_val, y_val, sample_weight_val)"
                )
            what = "fit (validation_data)"
            xv, yv, v_shape = self._check_data(*validation_data[:2], what)
            sw_val = validation_data[2] if len(validation_data) == 3 else None
            val = (xv, yv, self._sample_weight(yv, v_shape, sw_val, None, what))
        elif validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(
                    f"{self.name}.fit: validation_split must be in (0, 1), got {validation_split!r}"
                )
            split_at = int(math.floor(len(x) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(x):
                raise ValueError(
                    f"{self.name}.fit: validation_split={validation_split} of {len(x)} samples "
                    f"leaves no training or no validation samples"
                )
            # the validation part keeps its sample weights, not class weights (Keras)
            sw_val = None if sw is None or class_weight is not None else sw[split_at:]
            val = (x[split_at:], y[split_at:], sw_val)
            x, y, sw = x[:split_at], y[:split_at], None if sw is None else sw[:split_at]
        verbose = 1 if verbose == "auto" else int(verbose)
        n = len(x)
        steps = math.ceil(n / batch_size)
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        for c in cbs:
            if not isinstance(c, callbacks_module.Callback):
                raise TypeError(f"{self.name}.fit: callbacks must be Callback objects, got {c!r}")
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        cbs.append(history)
        cb = callbacks_module.CallbackList(
            cbs, self, {"epochs": int(epochs), "steps": steps, "verbose": verbose}
        )
        self.history = history
        rng = np.random.default_rng(utils.draw_seed())
        metric_objs = self._make_metrics(out_shape)
        self.stop_training = False
        logs = {}
        cb.on_train_begin()
        for epoch in range(int(initial_epoch), int(epochs)):
            for m in metric_objs:
                m.reset_state()
            cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else None
            loss_sum = count = 0
            for step in range(steps):
                part = slice(step * batch_size, min(n, (step + 1) * batch_size))
                idx = part if order is None else order[part]
                xb, yb = x[idx], y[idx]
                cb.on_train_batch_begin(step)
                swb = None if sw is None else sw[idx]
                loss, applied = self._train_step(xb, yb, rng, metric_objs, swb)
                if not applied:
                    warnings.warn(
                        f"{self.name}.fit: the loss or its gradients became non-finite "
                        f"(loss={loss}) at epoch {epoch + 1}, batch {step + 1}; training "
                        f"stopped and that batch was not applied, so the weights are those "
                        f"after the previous batch. Try a lower learning rate, clipnorm= or "
                        f"check the data for NaN/inf.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self.stop_training = True
                    logs = {"loss": float("nan"), **{m.name: m.result() for m in metric_objs}}
                    break
                loss_sum += loss * len(xb)
                count += len(xb)
                logs = {"loss": loss_sum / count, **{m.name: m.result() for m in metric_objs}}
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if val is not None and count:
                val_logs = self.evaluate(
                    *val[:2],
                    sample_weight=val[2],
                    batch_size=validation_batch_size or batch_size,
                    verbose=0,
                    return_dict=True,
                )
                logs = {**logs, **{f"val_{k}": v for k, v in val_logs.items()}}
            cb.on_epoch_end(epoch, dict(logs))
            if self.stop_training:
                break
        cb.on_train_end(dict(logs))
        return history

    # ---- evaluate and single batches ----------------------------------------------------

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):  # fmt: skip
        """Loss and metrics on ``(x, y)`` (inference mode), batch by batch.

        Returns the loss (a float) when there are no metrics, else ``[loss, *metrics]``, or a
        dict with ``return_dict=True``, as Keras.
        """
        self._require_compiled("evaluate")
        require_default("evaluate", steps=(steps, None), callbacks=(callbacks, None))
        batch_size = _batch_size(batch_size, "evaluate")
        x, y, out_shape = self._check_data(x, y, "evaluate")
        sw = self._sample_weight(y, out_shape, sample_weight, None, "evaluate")
        metric_objs = self._make_metrics(out_shape)
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            swb = None if sw is None else sw[start : start + batch_size]
            out = self.predict_on_batch(xb)
            total += self._loss(yb, out, swb) * len(xb)
            update_metrics(metric_objs, yb, out, swb)
        logs = {"loss": total / len(x), **{m.name: m.result() for m in metric_objs}}
        if verbose not in (0, "0"):
            print(callbacks_module._format_logs(logs), flush=True)
        return _result(logs, return_dict)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One update on one batch; returns the loss (and metrics) of that batch."""
        self._require_compiled("train_on_batch")
        x, y, out_shape = self._check_data(x, y, "train_on_batch")
        sw = self._sample_weight(y, out_shape, sample_weight, class_weight, "train_on_batch")
        metric_objs = self._make_metrics(out_shape)
        rng = np.random.default_rng(utils.draw_seed())
        loss, applied = self._train_step(x, y, rng, metric_objs, sw)
        if not applied:
            raise FloatingPointError(
                f"{self.name}.train_on_batch: the loss or its gradients are not finite "
                f"(loss={loss}); no weight was updated"
            )
        return _result({"loss": loss, **{m.name: m.result() for m in metric_objs}}, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        return self.evaluate(
            x, y, batch_size=len(x), verbose=0, sample_weight=sample_weight, return_dict=return_dict
        )


def _metric(spec, loss, units):
    return metrics.get(spec, loss, units)


def _batch_size(batch_size, what):
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
        raise ValueError(f"{what}: batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _result(logs, return_dict):
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
