"""The table ``model.summary()`` prints, drawn as Keras 3 draws it (box-drawing characters)."""

from __future__ import annotations

import shutil

__all__ = ["summary_table", "format_shape"]


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


def summary_table(title, rows, weights, line_length=None, positions=None) -> str:
    """The summary's text: ``title``, one box row per ``(name (type), shape, params)`` in
    ``rows``, then the parameter totals of ``weights = (all, trainable, non_trainable)``
    (lists of variables). ``line_length`` and ``positions`` as in ``keras.Model.summary``.
    """
    if line_length is None:
        line_length = min(88, shutil.get_terminal_size().columns - 4)
    positions = positions or [0.45, 0.80, 1.0]
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [b - a for a, b in zip([0] + list(positions[:-1]), positions)]
    # column text widths inside "│ text │" cells, the borders taking one char each
    cols = [w - 3 for w in widths]
    cols[1] -= 1

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
    lines += row(["Layer (type)", "Output Shape", "Param #"], "┃", "┃", "┃")
    lines.append(rule("┡", "╇", "┩", "━"))
    for k, texts in enumerate(rows):
        if k:
            lines.append(rule("├", "┼", "┤", "─"))
        lines += row(list(texts))
    lines.append(rule("└", "┴", "┘", "─"))
    all_weights, trainable, non_trainable = weights

    def total(vs):
        return (sum(v.value.size for v in vs), sum(v.value.nbytes for v in vs))

    for label, (count, size) in (
        ("Total", total(all_weights)),
        ("Trainable", total(trainable)),
        ("Non-trainable", total(non_trainable)),
    ):
        lines.append(f" {label} params: {count:,} ({_readable_size(size)})")
    return "\n".join(lines)
