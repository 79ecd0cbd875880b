"""The table ``model.summary()`` prints, drawn as Keras 3 draws it (box-drawing characters)."""

from __future__ import annotations

import shutil

__all__ = ["summary_table", "format_shape", "functional_summary", "layer_label"]


def _quantization_mode(layer) -> str | None:
    """The low-precision mode of a layer's weights: its own, its wrapped layers' (both
    directions of a Bidirectional) or a nested model's; ``"mixed"`` for several."""
    modes = {getattr(layer, "quantization_mode", None)} - {None}
    inner = layer.inner_layers() if hasattr(layer, "inner_layers") else []
    modes |= {_quantization_mode(sub) for sub in inner} - {None}
    return modes.pop() if len(modes) == 1 else ("mixed" if modes else None)


def layer_label(layer, class_name: str) -> str:
    """``lstm (LSTM)``; ``lstm (LSTM, int8)`` for a layer whose weights are quantized."""
    mode = _quantization_mode(layer)
    return f"{layer.name} ({class_name}{', ' + mode if mode else ''})"


def _nbytes(variables, quantized: dict) -> int:
    """What the weights take as the model holds them for computing: a quantized weight's
    low-precision values and scales, any other its own array."""
    total = 0
    for v in variables:
        q = quantized.get(id(v))
        if q is None:
            total += v.value.nbytes
        else:
            total += q.values.nbytes + (0 if q.scale is None else q.scale.nbytes)
    return total


def format_shape(shape) -> str:
    """``(None, 20, 16)``, or ``[(None, 16), (None, 16)]`` for several tensors."""
    if isinstance(shape, list) or (
        isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)
    ):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _readable_size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"


def _ratio_reduce(total: int, widths: list) -> list:
    """rich's ``ratio_reduce`` with equal ratios: ``total`` columns taken from ``widths``,
    as evenly as rounding allows (what rich does to a table wider than its width)."""
    out, remaining, ratio = [], total, len(widths)
    for w in widths:
        taken = min(w, round(remaining / ratio))
        out.append(w - taken)
        remaining -= taken
        ratio -= 1
    return out


def summary_table(title, rows, weights, line_length=None, positions=None, header=None,
                  default_length=88, quantized=None) -> str:  # fmt: skip
    """The summary's text: ``title``, one box row per ``(name (type), shape, params[,
    connected to])`` in ``rows``, then the parameter totals of ``weights = (all, trainable,
    non_trainable)`` (lists of variables), their sizes as held (``quantized``: the model's
    ``quantized_variables()``, whose low-precision bytes count, as Keras counts an int8
    kernel's). ``line_length`` and ``positions`` as in ``keras.Model.summary``; ``header``
    the column titles (Keras's three by default).
    """
    quantized = quantized or {}
    header = header or ["Layer (type)", "Output Shape", "Param #"]
    if line_length is None:
        line_length = min(default_length, shutil.get_terminal_size().columns - 4)
    positions = positions or ([0.45, 0.80, 1.0] if len(header) == 3 else [0.3, 0.56, 0.74, 1.0])
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [b - a for a, b in zip([0] + list(positions[:-1]), positions)]
    # rich lays the columns out at their width plus padding (2 each) inside the table's
    # width less its borders (one per column and one), taking the excess evenly
    padded = [w + 2 for w in widths]
    excess = sum(padded) - (line_length - len(widths) - 1)
    cols = [w - 2 for w in _ratio_reduce(excess, padded)]

    def cell_lines(text, width, right=False):
        lines, line = [], ""
        for word in text.split(" "):
            while len(word) > width:  # hard-wrap a word longer than the column
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:width])
                word = word[width:]
            if not line:
                line = word
            elif len(line) + 1 + len(word) <= width:
                line += " " + word
            else:
                lines.append(line)
                line = word
        lines.append(line)
        return [ln.rjust(width) if right else ln.ljust(width) for ln in lines]

    def row(texts, left="│", mid="│", right="│"):
        cells = [cell_lines(t, w, right=(k == 2)) for k, (t, w) in enumerate(zip(texts, cols))]
        height = max(len(c) for c in cells)
        cells = [c + [" " * w] * (height - len(c)) for c, w in zip(cells, cols)]
        return [left + mid.join(f" {c[i]} " for c in cells) + right for i in range(height)]

    def rule(left, mid, right, fill):
        return left + mid.join(fill * (w + 2) for w in cols) + right

    lines = [title, rule("┏", "┳", "┓", "━")]
    lines += row(list(header), "┃", "┃", "┃")
    lines.append(rule("┡", "╇", "┩", "━"))
    for k, texts in enumerate(rows):
        if k:
            lines.append(rule("├", "┼", "┤", "─"))
        lines += row(list(texts))
    lines.append(rule("└", "┴", "┘", "─"))
    all_weights, trainable, non_trainable = weights

    def total(vs):
        return (sum(v.value.size for v in vs), _nbytes(vs, quantized))

    for label, (count, size) in (
        ("Total", total(all_weights)),
        ("Trainable", total(trainable)),
        ("Non-trainable", total(non_trainable)),
    ):
        lines.append(f" {label} params: {count:,} ({_readable_size(size)})")
    return "\n".join(lines)


def _output_shape_text(layer) -> str:
    """Keras's ``format_layer_shape``: the outputs of the layer's last call."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return "?"
    outputs = nodes[-1].outputs
    shapes = [t.shape for t in outputs]
    return format_shape(shapes[0] if len(shapes) == 1 else shapes)


def _class_name(layer) -> str:
    return getattr(layer, "_class_name", None) or type(layer).__name__


def functional_summary(model, line_length=None, positions=None) -> str:
    """Keras 3's summary of a functional model: every layer (inputs included) in
    ``model.layers`` order, with a "Connected to" column (``layer[node][tensor]`` of each
    call's inputs) unless the graph is a chain."""
    graph = model._graph
    chain, seen = True, []
    for nodes in graph.nodes_by_depth.values():
        if len(nodes) > 1 or (len(nodes) == 1 and len(nodes[0].input_tensors) > 1):
            chain = False
            break
        seen += nodes
    if chain:
        for layer in graph.operations:
            if sum(1 for node in layer._inbound_nodes if node in seen) > 1:
                chain = False
                break
    rows = []
    for layer in graph.operations:
        fields = [
            layer_label(layer, _class_name(layer)),
            _output_shape_text(layer),
            f"{layer.count_params():,}",
        ]
        if not chain:
            links = [
                f"{t._keras_history.operation.name}[{t._keras_history.node_index}]"
                f"[{t._keras_history.tensor_index}]"
                for node in layer._inbound_nodes
                if node in graph.nodes
                for t in node.input_tensors
            ]
            fields.append(", ".join(links) or "-")
        rows.append(fields)
    return summary_table(
        f'Model: "{model.name}"',
        rows,
        weights=(model.weights, model.trainable_weights, model.non_trainable_weights),
        line_length=line_length,
        positions=positions,
        header=None if chain else ["Layer (type)", "Output Shape", "Param #", "Connected to"],
        default_length=88 if chain else 108,
        quantized=model.quantized_variables(),
    )
