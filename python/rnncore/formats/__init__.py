"""Model file formats below the models: safe archive reading, and the Keras and ONNX readers
and writer. Modules here build layers, never models, so :mod:`rnncore.models` can use them."""
