"""Keras-compatible layers over the rnncore core: ``from rnncore.layers import LSTM, Dense``.

Constructor arguments, defaults, weight names, shapes and order, call signatures, masks and
return values follow Keras 3, so ``rnncore_layer.set_weights(keras_layer.get_weights())``
reproduces a Keras layer. Calls take and return NumPy arrays in the layer's dtype
(``float32`` by default, ``float64`` when ``dtype="float64"``). Each layer also has a
training forward (``forward_train``) and ``backward`` that ``Sequential.fit`` chains; Keras
features rnncore does not implement (regularizers, constraints) raise an error naming the
argument rather than being ignored.
"""

from . import activations, initializers
from ._base import (
    LAYER_CLASSES,
    KerasTensor,
    Layer,
    MaskedOutput,
    UnsupportedArgumentError,
    Variable,
)
from .attention import AdditiveAttention, Attention
from .convolutional import Conv1D
from .core import Activation, Dense, Dropout, Input, InputLayer, InputTensor, Masking, Softmax
from .embedding import Embedding
from .merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from .noise import GaussianNoise, SpatialDropout1D
from .normalization import BatchNormalization, LayerNormalization
from .pooling import AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D
from .recurrent import GRU, LSTM, RNN, SimpleRNN
from .reshaping import (
    Cropping1D,
    Flatten,
    Permute,
    RepeatVector,
    Reshape,
    UpSampling1D,
    ZeroPadding1D,
)
from .wrappers import Bidirectional, TimeDistributed, deserialize_layer, serialize_layer

# LAYER_CLASSES (_base.py): the layer classes a saved model may name; nothing else is ever
# instantiated on load.
__all__ = ["LAYER_CLASSES", "Layer", "Variable", "MaskedOutput", "UnsupportedArgumentError", "RNN",
           "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed", "Dense", "Activation",
           "Softmax", "Dropout", "Masking", "Concatenate", "Add", "Subtract", "Multiply", "Average",
           "Maximum", "Minimum", "Dot", "concatenate", "add", "subtract", "multiply", "average",
           "maximum", "minimum", "dot", "LayerNormalization", "BatchNormalization", "Attention",
           "AdditiveAttention", "Embedding", "Conv1D", "MaxPooling1D", "AveragePooling1D",
           "GlobalAveragePooling1D", "GlobalMaxPooling1D", "RepeatVector", "Flatten", "Reshape",
           "Permute", "ZeroPadding1D", "Cropping1D", "UpSampling1D", "SpatialDropout1D",
           "GaussianNoise", "Input", "InputLayer", "InputTensor", "KerasTensor", "activations",
           "initializers", "serialize_layer", "deserialize_layer"]  # fmt: skip
