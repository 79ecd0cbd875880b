"""``quantize(mode)`` for the layers with a low-precision kernel in the core (the recurrent
layers and Dense): their kernels held as bfloat16 or int8 (:mod:`rnncore.quantization`).

After ``layer.quantize(mode)`` the layer computes with the quantized weights (inference:
call, predict, streaming); its float32 variables hold the dequantized values, which
``get_weights`` returns. Setting new weights (``set_weights``, ``assign``) quantizes them
again with the same mode at the next call. Training a quantized layer is refused. Quantizing
again in the same mode changes nothing; in another mode it is refused (the float32 weights
are not kept, so it would round rounded weights: quantize a float32 copy instead).
"""

from __future__ import annotations

import numpy as np

from ..quantization import check_mode, check_quantized, dequantize, quantize

__all__ = ["Quantizable"]


class Quantizable:
    """Mixin of a :class:`~rnncore.layers.Layer` whose weights named in
    ``_quantized_weights`` have a low-precision kernel in the core."""

    #: the weights held in low precision (the others, biases, stay float32)
    _quantized_weights: tuple = ("kernel",)
    #: (mode, {name: Quantized}, the weights' generation when quantized), or None
    _quant = None

    @property
    def quantization_mode(self) -> str | None:
        """``"bf16"``, ``"int8"``, or None for float weights."""
        return None if self._quant is None else self._quant[0]

    def quantize(self, mode: str) -> None:
        """Hold the kernels in low precision (``"bf16"`` or ``"int8"``); float32 layers only."""
        owner = f"{type(self).__name__} {self.name!r}"
        check_mode(mode, f"{owner}: quantize")
        if not self.built:
            raise ValueError(f"{owner}: quantize needs a built layer (call or build it first)")
        if self._np_dtype != np.float32:
            raise TypeError(
                f"{owner}: quantize takes float32 layers only, got dtype {self._np_dtype.name}"
            )
        refusal = self._requantize_refusal(mode)
        if refusal:
            raise ValueError(refusal)
        if self._holds_quantized():  # the same mode again: nothing to round
            return
        self.set_quantized(
            mode,
            {
                n: quantize(getattr(self, n).value, mode, f"{owner}: {n}")
                for n in self._quantized_weights
            },
        )

    def _holds_quantized(self) -> bool:
        """Whether the variables hold the dequantized weights of the last quantize (no
        weights were set since: those would be float weights, quantized again)."""
        return self._quant is not None and self._quant[2] == self._lowp_generation()

    def _requantize_refusal(self, mode: str) -> str | None:
        """Why ``quantize(mode)`` is refused, or None. A layer quantized in one mode holds
        only that mode's rounded weights (the float32 ones are not kept, as in Keras): a
        second mode would round the rounded values again, a different result from quantizing
        the float weights, so it is refused (Keras refuses any second quantize)."""
        if not self._holds_quantized() or mode == self._quant[0]:
            return None
        return (
            f"{type(self).__name__} {self.name!r}: already quantized ({self._quant[0]}); "
            f"quantize({mode!r}) would round its {self._quant[0]}-rounded weights again, and "
            f"the float32 weights are not kept: quantize a float32 copy of the model instead "
            f"(copy.deepcopy before the first quantize, or load the float model again)"
        )

    def set_quantized(self, mode: str, weights: dict) -> None:
        """Hold exactly these quantized weights (``{name: Quantized}``, as a saved file
        holds them: checked like one) and their dequantized values in the variables."""
        owner = f"{type(self).__name__} {self.name!r}"
        check_mode(mode, f"{owner}: quantized weights")
        if set(weights) != set(self._quantized_weights):
            raise ValueError(
                f"{owner}: expected quantized weights {list(self._quantized_weights)}, "
                f"got {sorted(weights)}"
            )
        checked = {}
        for name in self._quantized_weights:
            var = getattr(self, name)
            checked[name] = check_quantized(
                weights[name], mode, var.value.shape, f"{owner}: {name}"
            )
            var.assign(dequantize(checked[name]))
        self._quant = (mode, checked, self._lowp_generation())
        # new low-precision arrays: every cache over the layer is built again (not repacked)
        self._respec()

    def quantized_weights(self) -> dict | None:
        """``{name: Quantized}`` of the current weights (quantized again if they changed
        since), or None for a float layer."""
        if self._quant is None:
            return None
        mode, weights, generation = self._quant
        if generation != self._lowp_generation():
            self.quantize(mode)
            weights = self._quant[1]
        return weights

    def __getstate__(self):
        state = super().__getstate__()
        if self._quant is not None:  # generations are the process's own: pickled as a flag
            state["_quant"] = self._quant[:2] + (self._holds_quantized(),)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self._quant is not None:
            held = self._quant[2]
            if isinstance(held, tuple):  # pickled before generations: the versions then
                held = held == tuple(getattr(self, n).version for n in self._quantized_weights)
            self._quant = self._quant[:2] + (self._lowp_generation() if held is True else -1,)

    def _lowp_generation(self) -> int:
        """The newest generation of the quantized weights' values (numbers are never reused,
        so it changes at any update of any of them)."""
        return max(getattr(self, n).generation for n in self._quantized_weights)

    def _refuse_training(self) -> None:
        if self._quant is not None:
            raise RuntimeError(
                f"{type(self).__name__} {self.name!r}: the layer is quantized "
                f"({self._quant[0]}); training it is not supported (train in float32, then "
                f"quantize)"
            )
