"""Training for :class:`rnncore.Sequential` and :class:`rnncore.Model`: ``compile``, ``fit``,
``evaluate``, ``train_on_batch``, ``test_on_batch`` (Keras's signatures and logs).

One step: the model's training forward (each layer's ``forward_train``: the core's training
forward, keeping its workspace; dropout active) -> each output's loss and dL/d(output) ->
the model's backward (each layer's ``backward`` in reverse, the core's backward) ->
``optimizer.apply_gradients``. The update comes last and is all or nothing, so an error
anywhere in a step leaves the weights as they were. A batch whose loss or gradients are not
finite is not applied: training stops with a ``RuntimeWarning`` that says so. Data are
checked before the first step (sample counts, target shapes against each loss and output),
so bad input fails with a ``ValueError`` before any weight changes.

Several outputs (Keras 3's rules): ``loss`` is one loss for every output, a list (one per
output, None for an output left untrained) or a dict keyed by output name;
``loss_weights``, ``metrics``, ``weighted_metrics``, ``y`` and ``sample_weight`` likewise.
The loss is ``sum(weight_k * loss_k)``; the logs hold ``loss``, ``<output>_loss`` (the
unweighted loss of each output, when more than one has a loss) and ``<output>_<metric>``.
An output's Keras mask (a masked sequence) drops its masked steps from its loss and
metrics, as Keras does.

What a model provides: ``name``; ``_output_names_list()``; ``_training_inputs(x, what)``
(the inputs as a list of numeric arrays); ``_output_shapes_for(xs)`` (building the model if
needed); ``_forward_outputs(xs, rng)`` and ``_outputs_on_batch(xs)`` (``(outputs, masks)``,
lists, in training and in inference mode); ``_backward_outputs(d_outputs)``;
``_trainable_gradients()`` (``[(gradient, variable)]``) and ``_release_training()``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import callbacks as callbacks_module
from . import losses, optimizers, utils
from .layers._base import require_default
from .metrics import compile_metrics, update_metrics

__all__ = ["Trainer"]


class Trainer:
    """The training methods of :class:`rnncore.Sequential` and :class:`rnncore.Model` (a
    mixin)."""

    stop_training = False
    optimizer = None
    _loss = None
    _losses = None  # per output: a Loss, or None for an output without a loss
    _loss_weights = None  # per output: a float, or None (1)
    _metrics = None  # per output: the metric specs
    _weighted_metrics = None
    history = None
    #: what pickling drops (a pickled model keeps its layers' config and weights only;
    #: compile it again to train it further)
    _training_state = ("optimizer", "_loss", "_losses", "_loss_weights", "_metrics",
                       "_weighted_metrics", "history", "_compile_config")  # fmt: skip

    # ---- compile ----------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
                auto_scale_loss=True):  # fmt: skip
        """Set the optimizer (object or name: ``"sgd"``, ``"adam"``, ``"rmsprop"``), the loss
        (``"mse"``, ``"mae"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
        ``"sparse_categorical_crossentropy"`` or a :mod:`rnncore.losses` object) and metrics
        (``"accuracy"``, ``"mae"``, ``"mse"``); for several outputs each may be given per
        output, as a list or a dict keyed by output name (see the module's help)."""
        require_default("compile", steps_per_execution=(steps_per_execution, 1))
        if loss is None:
            raise ValueError(f"{self.name}.compile: a loss is required, e.g. loss='mse'")
        names = self._output_names_list()
        loss_objs = [
            None if spec is None else losses.get(spec)
            for spec in _per_output(loss, names, "loss", self.name, broadcast=True)
        ]
        if all(obj is None for obj in loss_objs):
            raise ValueError(f"{self.name}.compile: a loss is required for at least one output")
        weights = _per_output(loss_weights, names, "loss_weights", self.name)
        for w in weights:
            if w is not None and (isinstance(w, bool) or not np.isfinite(float(w))):
                raise ValueError(f"{self.name}.compile: loss_weights must be numbers, got {w!r}")
        specs = _per_output_specs(metrics, names, "metrics", self.name)
        weighted = _per_output_specs(weighted_metrics, names, "weighted_metrics", self.name)
        for k, loss_obj in enumerate(loss_objs):
            compile_metrics(specs[k], weighted[k], loss_obj)  # unknown names fail here
        self.optimizer = optimizers.get(optimizer)
        self._losses, self._loss_weights = loss_objs, weights
        self._loss = loss_objs[0] if len(names) == 1 else loss_objs
        self._metrics, self._weighted_metrics = specs, weighted
        self._compile_config = {"optimizer": optimizer, "loss": loss, "metrics": metrics,
                                "loss_weights": loss_weights,
                                "weighted_metrics": weighted_metrics}  # fmt: skip
        self.stop_training = False

    @property
    def loss(self):
        return self._loss

    @property
    def compiled(self) -> bool:
        return self._losses is not None

    def _require_compiled(self, what):
        if self._losses is None or self.optimizer is None:
            raise RuntimeError(
                f"{self.name}.{what}: compile the model first, e.g. "
                f"model.compile(optimizer='adam', loss='mse')"
            )

    # ---- data checks ------------------------------------------------------------------

    def _data_array(self, a, name, what) -> np.ndarray:
        """An array of ``x`` or ``y``: numeric, real, with a sample axis."""
        return _data_array(a, name, self, what)

    def _check_data(self, x, y, what):
        """``(inputs, targets, output shapes)``: lists (one entry per input / output; a
        target None for an output without loss), checked against the losses."""
        if x is None or y is None:
            raise ValueError(f"{self.name}.{what}: both x and y are required")
        xs = self._training_inputs(x, what)
        names = self._output_names_list()
        label = "y" if len(names) == 1 else "y[{!r}]"
        ys = [
            None if t is None else _data_array(t, label.format(name), self, what)
            for t, name in zip(_per_output(y, names, "y", self.name, data=True), names)
        ]
        n = len(xs[0])
        for t in ys:
            if t is not None and len(t) != n:
                raise ValueError(
                    f"{self.name}.{what}: x and y must have the same number of samples, got "
                    f"{n} (x.shape={xs[0].shape}) and {len(t)} (y.shape={t.shape})"
                )
        if n == 0:
            raise ValueError(f"{self.name}.{what}: no samples")
        out_shapes = self._output_shapes_for(xs)
        for loss, t, shape, name in zip(self._losses, ys, out_shapes, names):
            if loss is None:
                continue
            if t is None:
                raise ValueError(f"{self.name}.{what}: no targets y for output {name!r}")
            loss.check_target((None,) + t.shape[1:], shape)
            if isinstance(loss, losses.SparseCategoricalCrossentropy):
                loss.check_labels(t, shape[-1])
        return xs, ys, out_shapes

    def _make_metrics(self, out_shapes, ys):
        """Each output's metric objects (none for an output without targets); named
        ``<output>_<metric>`` for several outputs."""
        names = self._output_names_list()
        out = []
        for k, shape in enumerate(out_shapes):
            if ys[k] is None:
                out.append([])
                continue
            objs = compile_metrics(
                self._metrics[k], self._weighted_metrics[k], self._losses[k], shape[-1]
            )
            if len(names) > 1:
                for m in objs:
                    m.name = f"{names[k]}_{m.name}"
            out.append(objs)
        return out

    def _sample_weights(self, ys, out_shapes, sample_weight, class_weight, what):
        """Per output, the loss weights of its samples (or None); ``class_weight`` only for
        a model with one output, as Keras."""
        names = self._output_names_list()
        if class_weight is not None and len(names) > 1:
            raise ValueError(
                f"{self.name}.{what}: class_weight is only supported for models with one "
                f"output; give sample_weight per output instead"
            )
        given = _per_output(sample_weight, names, "sample_weight", self.name, broadcast=True,
                            data=True)  # fmt: skip
        return [
            None if t is None else self._sample_weight(t, shape, sw, class_weight, what)
            for t, shape, sw in zip(ys, out_shapes, given)
        ]

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

    def _losses_and_gradients(self, ys, outs, masks, sws):
        """``(loss, per-output losses, dL/d(outputs))``: the weighted sum of the outputs'
        losses, each output's own (unweighted) loss, and the gradients (None for an output
        without loss)."""
        total, parts, d_outs = 0.0, [], []
        for loss, w, t, out, mask, sw in zip(self._losses, self._loss_weights, ys, outs,
                                             masks, sws):  # fmt: skip
            if loss is None:
                parts.append(None)
                d_outs.append(None)
                continue
            value, grad = loss.value_and_gradient(t, out, sw, _loss_mask(mask, out))
            if w is not None and w != 1:
                grad = (grad * float(w)).astype(grad.dtype, copy=False)
                total += float(w) * value
            else:
                total += value
            parts.append(value)
            d_outs.append(grad)
        return total, parts, d_outs

    def _train_step(self, xs, ys, rng, metric_objs, sws):
        """One update; returns ``(loss, per-output losses, applied)`` (not applied when the
        loss or a gradient is not finite)."""
        try:
            outs, masks = self._forward_outputs(xs, rng)
            total, parts, d_outs = self._losses_and_gradients(ys, outs, masks, sws)
            if not math.isfinite(total):
                return total, parts, False
            _update(metric_objs, ys, outs, masks, sws)
            self._backward_outputs(d_outs)
            try:
                self.optimizer.apply_gradients(self._trainable_gradients())
            except FloatingPointError:
                return total, parts, False
        finally:
            self._release_training()  # the layers' workspaces
        return total, parts, True

    def _logs(self, total, parts, metric_objs) -> dict:
        """Keras's logs: ``loss``, ``<output>_loss`` for several losses, the metrics."""
        logs = {"loss": total}
        active = [k for k, loss in enumerate(self._losses) if loss is not None]
        if len(active) > 1:
            names = self._output_names_list()
            logs.update({f"{names[k]}_loss": parts[k] for k in active})
        logs.update(self._metric_logs(metric_objs))
        return logs

    def _metric_logs(self, metric_objs) -> dict:
        """The metrics' results, in the order Keras lists them (``evaluate``'s list): as
        compiled for one output, by name for several."""
        results = [(m.name, m.result()) for objs in metric_objs for m in objs]
        return dict(sorted(results) if len(metric_objs) > 1 else results)

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
        if getattr(self, "quantization_mode", None):
            raise RuntimeError(
                f"fit: the model is quantized ({self.quantization_mode}); training quantized "
                f"weights is not supported (train in float32, then quantize)"
            )
        require_default("fit", steps_per_epoch=(steps_per_epoch, None),
                        validation_steps=(validation_steps, None),
                        validation_freq=(validation_freq, 1))  # fmt: skip
        batch_size = _batch_size(batch_size, "fit")
        xs, ys, out_shapes = self._check_data(x, y, "fit")
        sws = self._sample_weights(ys, out_shapes, sample_weight, class_weight, "fit")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError(
                    f"{self.name}.fit: validation_data must be (x_val, y_val) or "
                    f"(x_val, y_val, sample_weight_val)"
                )
            what = "fit (validation_data)"
            xv, yv, v_shapes = self._check_data(*validation_data[:2], what)
            sw_val = validation_data[2] if len(validation_data) == 3 else None
            val = (xv, yv, self._sample_weights(yv, v_shapes, sw_val, None, what))
        elif validation_split:
            n = len(xs[0])
            if not 0 < validation_split < 1:
                raise ValueError(
                    f"{self.name}.fit: validation_split must be in (0, 1), got {validation_split!r}"
                )
            split_at = int(math.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(
                    f"{self.name}.fit: validation_split={validation_split} of {n} samples "
                    f"leaves no training or no validation samples"
                )
            # the validation part keeps its sample weights, not class weights (Keras)
            val_sws = [None if class_weight is not None else w for w in sws]
            val = tuple(_rows(part, slice(split_at, None)) for part in (xs, ys, val_sws))
            xs, ys, sws = (_rows(part, slice(None, split_at)) for part in (xs, ys, sws))
        verbose = 1 if verbose == "auto" else int(verbose)
        n = len(xs[0])
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
        metric_objs = self._make_metrics(out_shapes, ys)
        self.stop_training = False
        logs = {}
        cb.on_train_begin()
        for epoch in range(int(initial_epoch), int(epochs)):
            for m in (m for objs in metric_objs for m in objs):
                m.reset_state()
            cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else None
            sums, count = None, 0
            for step in range(steps):
                part = slice(step * batch_size, min(n, (step + 1) * batch_size))
                idx = part if order is None else order[part]
                xb, yb, swb = (_rows(p, idx) for p in (xs, ys, sws))
                cb.on_train_batch_begin(step)
                loss, parts, applied = self._train_step(xb, yb, rng, metric_objs, swb)
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
                    logs = self._logs(float("nan"), parts, metric_objs)
                    break
                rows = len(xb[0])
                batch = self._logs(loss, parts, [])  # the running means of the losses
                sums = {k: v * rows + (sums[k] if sums else 0.0) for k, v in batch.items()}
                count += rows
                logs = {**{k: v / count for k, v in sums.items()},
                        **self._metric_logs(metric_objs)}  # fmt: skip
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if val is not None and count:
                val_logs = self._evaluate_lists(*val, validation_batch_size or batch_size)
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

        Returns the loss (a float) when there are no metrics, else ``[loss, *metrics]``
        (for several outputs ``[loss, *output losses, *metrics]``), or a dict with
        ``return_dict=True``, as Keras.
        """
        self._require_compiled("evaluate")
        require_default("evaluate", steps=(steps, None), callbacks=(callbacks, None))
        batch_size = _batch_size(batch_size, "evaluate")
        xs, ys, out_shapes = self._check_data(x, y, "evaluate")
        sws = self._sample_weights(ys, out_shapes, sample_weight, None, "evaluate")
        logs = self._evaluate_lists(xs, ys, sws, batch_size)
        if verbose not in (0, "0"):
            print(callbacks_module._format_logs(logs), flush=True)
        return _result(logs, return_dict)

    def _evaluate_lists(self, xs, ys, sws, batch_size) -> dict:
        metric_objs = self._make_metrics(self._output_shapes_for(xs), ys)
        n = len(xs[0])
        sums = None
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            xb, yb, swb = (_rows(p, part) for p in (xs, ys, sws))
            outs, masks = self._outputs_on_batch(xb)
            values = [
                None if loss is None else loss(t, out, sw, _loss_mask(mask, out))
                for loss, t, out, mask, sw in zip(self._losses, yb, outs, masks, swb)
            ]
            total = sum(
                v * (1.0 if w is None else float(w))
                for v, w in zip(values, self._loss_weights)
                if v is not None
            )
            _update(metric_objs, yb, outs, masks, swb)
            rows = len(xb[0])
            batch = self._logs(total, values, [])
            sums = {k: v * rows + (sums[k] if sums else 0.0) for k, v in batch.items()}
        logs = {k: v / n for k, v in sums.items()}
        logs.update(self._metric_logs(metric_objs))
        return logs

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One update on one batch; returns the loss (and metrics) of that batch."""
        self._require_compiled("train_on_batch")
        xs, ys, out_shapes = self._check_data(x, y, "train_on_batch")
        sws = self._sample_weights(ys, out_shapes, sample_weight, class_weight, "train_on_batch")
        metric_objs = self._make_metrics(out_shapes, ys)
        rng = np.random.default_rng(utils.draw_seed())
        loss, parts, applied = self._train_step(xs, ys, rng, metric_objs, sws)
        if not applied:
            raise FloatingPointError(
                f"{self.name}.train_on_batch: the loss or its gradients are not finite "
                f"(loss={loss}); no weight was updated"
            )
        return _result(self._logs(loss, parts, metric_objs), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._require_compiled("test_on_batch")
        xs, ys, out_shapes = self._check_data(x, y, "test_on_batch")
        sws = self._sample_weights(ys, out_shapes, sample_weight, None, "test_on_batch")
        return _result(self._evaluate_lists(xs, ys, sws, len(xs[0])), return_dict)


# ---- per-output arguments ----------------------------------------------------------------


def _per_output(value, names, what, owner, broadcast=False, data=False) -> list:
    """``value`` as one entry per output: a list of that length, a dict keyed by output
    name (missing keys None), or (``broadcast``, or one output) the same for every output.
    ``data``: ``value`` holds arrays (``y``, ``sample_weight``), so for one output a list is
    its values, unless it is a list of one array."""
    n = len(names)
    if value is None:
        return [None] * n
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(
                f"{owner}: {what} names unknown output(s) {unknown}; the outputs are {names}"
            )
        return [value.get(name) for name in names]
    is_list = isinstance(value, (list, tuple))
    if n == 1:
        one = is_list and len(value) == 1
        if one and (isinstance(value[0], np.ndarray) if data else what != "metrics"):
            return [value[0]]
        return [value]
    if is_list:
        if len(value) != n:
            raise ValueError(
                f"{owner}: {what} must have one entry per output ({n}: {names}), got {len(value)}"
            )
        return list(value)
    if not broadcast:
        raise ValueError(
            f"{owner}: the model has {n} outputs ({names}): give {what} as a list or a dict "
            f"keyed by output name"
        )
    return [value] * n


def _per_output_specs(value, names, what, owner) -> list[list]:
    """Metric specs per output: for one output a flat list (or ``{name: specs}``); for
    several a list or dict with a spec or a list of specs per output."""
    if value is None:
        return [[] for _ in names]
    if len(names) == 1 and isinstance(value, (list, tuple)):
        if len(value) == 1 and isinstance(value[0], (list, tuple)):
            value = value[0]
        return [list(value)]
    if not isinstance(value, (list, tuple, dict)):
        raise TypeError(f"{owner}: {what} must be a list or a dict, got {value!r}")
    per = _per_output(value, names, what, owner)
    return [[] if v is None else list(v) if isinstance(v, (list, tuple)) else [v] for v in per]


def _data_array(a, name, model, what) -> np.ndarray:
    """An array of ``x`` or ``y``: numeric, real, with a sample axis."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ValueError(
            f"{model.name}.{what}: {name} must be a numeric array, got dtype {a.dtype}"
        )
    if a.dtype.kind == "c":
        raise TypeError(
            f"{model.name}.{what}: {name} must be real numbers, got complex values "
            f"(casting them would discard the imaginary part)"
        )
    if a.ndim == 0:
        raise ValueError(f"{model.name}.{what}: {name} must have a sample axis")
    return a


def _loss_mask(mask, out):
    """An output's Keras mask as its loss takes it (one entry per loss value), or None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    return mask if mask.shape == np.shape(out)[: mask.ndim] and mask.ndim < np.ndim(out) else None


def _update(metric_objs, ys, outs, masks, sws) -> None:
    for objs, t, out, mask, sw in zip(metric_objs, ys, outs, masks, sws):
        if t is not None:
            update_metrics(objs, t, out, sw, _loss_mask(mask, out))


def _rows(arrays: list, index) -> list:
    return [None if a is None else a[index] for a in arrays]


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
