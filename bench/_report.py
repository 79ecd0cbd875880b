"""Targets, Markdown table, JSON and PNG chart for ``bench/run.py``'s results."""

from __future__ import annotations

import json
import math
from pathlib import Path

from _impls import IMPL_LABELS, PEERS

MODE_LABEL = {
    "stream": "streaming, per step through the public Python API, state carried",
    "forward": "forward, whole sequence, output (B, T, H)",
    "train": "forward + backward, loss = out.sum(), grads for weights and input",
}


# --------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------


def _index(res):
    return {(r["shape"], r["mode"], r["cell"], r["impl"], r["threads"]): r for r in res["rows"]}


def _groups(res):
    """(shape, mode, threads, cell) in the order they ran, with rnncore's row present."""
    seen = []
    for r in res["rows"]:
        k = (r["shape"], r["mode"], r["threads"], r["cell"])
        if k not in seen:
            seen.append(k)
    return seen


def _peer_rows(idx, shape, mode, cell, threads):
    return {
        p: idx[(shape, mode, cell, p, threads)]
        for p in PEERS
        if (shape, mode, cell, p, threads) in idx
    }


def _best_peer(peers: dict):
    if not peers:
        return None, None
    p = min(peers, key=lambda k: peers[k]["ms"])
    return p, peers[p]


# --------------------------------------------------------------------------------------
# Targets (the issue's); informative, never an exit status
# --------------------------------------------------------------------------------------

SPEED_TARGETS = {  # (shape, mode): required rnncore speed-up over the best peer
    ("S1", "stream"): 5.0,
    ("S2", "forward"): 2.0,
    ("S3", "forward"): 1.25,
    ("S4", "forward"): 1.15,
}
SIMPLE_RNN_TARGET = 1.5
S2_REFERENCE_TARGET = 10.0
S4_ROOFLINE_TARGET = 0.80
S4_SCALING_TARGET = 1.8


def evaluate_targets(res) -> list[dict]:
    idx = _index(res)
    out = []

    def add(target, scope, value, need, text):
        if value is None:
            out.append(
                {
                    "target": target,
                    "scope": scope,
                    "measured": text or "not measured",
                    "required": need,
                    "status": "n/a",
                }
            )
        else:
            out.append(
                {
                    "target": target,
                    "scope": scope,
                    "measured": text,
                    "required": need,
                    "status": "PASS" if value >= need else "FAIL",
                }
            )

    for shape, mode, threads, cell in _groups(res):
        rn = idx.get((shape, mode, cell, "rnncore", threads))
        if rn is None or (shape, mode) not in SPEED_TARGETS:
            continue
        scope = f"{shape} {cell} t={threads}"
        peers = _peer_rows(idx, shape, mode, cell, threads)
        best, brow = _best_peer(peers)
        need = SPEED_TARGETS[(shape, mode)]
        if cell == "simple_rnn":
            need = max(need, SIMPLE_RNN_TARGET)
        ratio = brow["ms"] / rn["ms"] if brow else None
        add(
            f"{shape}: >= {need:g}x faster than the best peer"
            + (" (SimpleRNN: >= 1.5x at every shape)" if cell == "simple_rnn" else ""),
            scope,
            ratio,
            need,
            f"{ratio:.2f}x vs {IMPL_LABELS[best]}" if brow else "no peer measured",
        )
        if shape == "S2" and "reference" in peers:
            r = peers["reference"]["ms"] / rn["ms"]
            add(
                f"S2: >= {S2_REFERENCE_TARGET:g}x faster than the NumPy reference",
                scope,
                r,
                S2_REFERENCE_TARGET,
                f"{r:.2f}x",
            )
        if shape == "S4":
            f = rn.get("roofline_frac")
            add(
                f"S4: >= {S4_ROOFLINE_TARGET:.0%} of the matmul roofline",
                scope,
                f,
                S4_ROOFLINE_TARGET,
                f"{f:.0%} ({rn['gflops']:.1f} GFLOP/s)" if f else "",
            )
    threads = sorted({r["threads"] for r in res["rows"]})
    if 1 in threads and 2 in threads:
        for cell in res["meta"]["cells"]:
            a = idx.get(("S4", "forward", cell, "rnncore", 1))
            b = idx.get(("S4", "forward", cell, "rnncore", 2))
            if a and b:
                s = a["ms"] / b["ms"]
                add(
                    f"S4: 2 threads >= {S4_SCALING_TARGET:g}x faster than 1 thread",
                    f"S4 {cell}",
                    s,
                    S4_SCALING_TARGET,
                    f"{s:.2f}x",
                )
    mem = {}
    for m in res["memory"]:
        mem.setdefault((m["shape"], m["cell"], m["threads"]), {})[m["impl"]] = m
    for (shape, cell, threads), by in mem.items():
        if shape != "S4" or "rnncore" not in by:
            continue
        peers = {k: v for k, v in by.items() if k != "rnncore"}
        if not peers:
            continue
        low = min(peers, key=lambda k: peers[k]["forward_peak_mib"])
        rn, lo = by["rnncore"]["forward_peak_mib"], peers[low]["forward_peak_mib"]
        # PASS when rnncore's peak is no higher: express as lowest_peer / rnncore >= 1
        add(
            "S4: peak forward memory no higher than the lowest peer's",
            f"S4 {cell} t={threads}",
            1.0 if rn <= lo else 0.0,
            1.0,
            f"{rn:.1f} MiB vs {lo:.1f} MiB ({IMPL_LABELS[low]})",
        )
    return out


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def _f(v, digits=4):
    """A number with ``digits`` significant digits, no exponent for usual ranges."""
    if v is None:
        return "–"
    if v == 0:
        return "0"
    if abs(v) >= 10**digits:
        return f"{v:.0f}"
    s = f"{v:.{digits}g}"
    if "e" in s:
        s = f"{v:.{max(digits, 1) + 3}f}".rstrip("0").rstrip(".")
    return s


def _ratio(peer, rn):
    if peer is None or rn is None:
        return "–"
    return f"{peer['ms'] / rn['ms']:.2f}×"


def _pct(x, of) -> str:
    return f"{x / of:.0%}" if x and of else "–"


def _kernel_md(k) -> str:
    """Cache sizes and the matrix kernel's blocking (rnncore.build_info()['kernel'])."""
    if not k:
        return "| caches, blocking | ? (this rnncore does not report them) |"
    kib = lambda n: f"{n // 1024} KiB" if n < 1 << 20 else f"{n / (1 << 20):g} MiB"  # noqa: E731
    f32, f64 = k["float32"], k["float64"]
    return (
        f"| caches, blocking | L1d {kib(k['l1d_bytes'])}, L2 {kib(k['l2_bytes'])}, L3 "
        f"{kib(k['l3_bytes']) if k['l3_bytes'] else '?'} (from {k['cache_source']}); "
        f"{8 * k['vector_bytes']}-bit vectors; float32 MR×NR {f32['MR']}×{f32['NR']}, "
        f"KC {f32['KC']}, MC {f32['MC']}; float64 {f64['MR']}×{f64['NR']}, KC {f64['KC']}, "
        f"MC {f64['MC']} |"
    )


def _machine_md(res) -> list[str]:
    m, meta = res["machine"], res["meta"]
    v = m["versions"]
    b = m["rnncore_build"]
    lines = [
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({', '.join(m['cpu_flags']) or '?'}) |",
        f"| cores | {m['physical_cores']} physical, {m['logical_cpus']} logical, "
        f"{m['usable_cpus']} usable by this process |",
        f"| memory | {m['memory_gib']:.1f} GiB |" if m["memory_gib"] else "| memory | ? |",
        f"| OS | {m['os']} |",
        f"| rnncore | {v['rnncore']}, build: isa {b.get('isa')}, simd {b.get('simd')}, "
        f"threads {b.get('threads')}, Eigen {b.get('eigen')}; imported from "
        f"`{m.get('rnncore_from', '?')}`; checkout {m.get('git', '?')} |",
        _kernel_md(b.get("kernel")),
        f"| versions | Python {v['python']}, NumPy {v['numpy']}, PyTorch {v['torch']}, "
        f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, threadpoolctl "
        f"{v['threadpoolctl']} |",
        f"| NumPy BLAS | {m['numpy_blas']} |",
        f"| threading runtimes loaded | {', '.join(Path(p).name for p in meta.get('runtimes_loaded', [])) or '?'} |",  # noqa: E501
        f"| load average (1/5/15 min) | start {meta['loadavg_start']}, end "
        f"{meta.get('loadavg_end', '?')} |",
    ]
    return lines


def _case_table(res, shape, mode, threads_list, idx) -> list[str]:
    sh = res["shapes"][shape]
    meta = res["meta"]
    present_peers = [
        p
        for p in PEERS
        if any(r["impl"] == p and r["shape"] == shape and r["mode"] == mode for r in res["rows"])
    ]
    unit = "ms/step" if mode == "stream" else "ms"
    dims = f"B={sh['B']}, T={sh['T'] if mode != 'stream' else 1}, D={sh['D']}, H={sh['H']}"
    extra = f", {meta['stream_steps']} steps per sample" if mode == "stream" else ""
    out = [f"### {shape} {sh['label']} — {dims} — {MODE_LABEL[mode]}{extra}", ""]
    head = ["cell", "thr", f"rnncore {unit}", "GFLOP/s", "% roof", "% peak", "spread"]
    for p in present_peers:
        head.append(f"{IMPL_LABELS[p]} {unit}")
    for p in present_peers:
        head.append(f"× {IMPL_LABELS[p]}")
    head += ["best peer", "× best"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in threads_list:
        for cell in meta["cells"]:
            rn = idx.get((shape, mode, cell, "rnncore", t))
            if rn is None:
                continue
            peers = _peer_rows(idx, shape, mode, cell, t)
            best, brow = _best_peer(peers)
            cells = [
                cell,
                str(t),
                _f(rn["ms"]),
                _f(rn["gflops"], 3),
                f"{rn['roofline_frac']:.0%}" if rn.get("roofline_frac") else "–",
                _pct(rn["gflops"], res["roofline"].get(str(t), {}).get("fma_peak_gflops")),
                f"±{rn['iqr_pct'] / 2:.0f}%" if rn.get("iqr_pct") is not None else "–",
            ]
            cells += [_f(peers[p]["ms"]) if p in peers else "–" for p in present_peers]
            cells += [_ratio(peers.get(p), rn) for p in present_peers]
            cells += [IMPL_LABELS[best] if best else "–", f"**{_ratio(brow, rn)}**"]
            out.append("| " + " | ".join(cells) + " |")
    paths = {}
    for r in res["rows"]:
        if r["shape"] == shape and r["mode"] == mode:
            paths.setdefault(r["impl"], r["path"])
    out += ["", "Paths: " + "; ".join(f"{IMPL_LABELS[k]}: {v}" for k, v in paths.items()), ""]
    return out


def markdown(res) -> str:
    meta = res["meta"]
    idx = _index(res)
    kind = "quick smoke run (--quick)" if meta["quick"] else "run"
    L = [
        "# rnncore benchmark results",
        "",
        f"{meta['date']} — {kind}: `{meta['command']}` — {meta['seconds']} s, "
        f"{meta['repeats']} timed rounds, implementations interleaved in one process.",
        "",
    ]
    if meta["quick"]:
        L += [
            "> Quick mode: few repeats and short samples. The numbers only show that every "
            "path runs and agrees; do not read performance from them.",
            "",
        ]
    elif (
        set(meta["shapes"]) != {"S1", "S2", "S3", "S4"}
        or set(meta["threads"]) != {1, 2}
        or len(meta["cells"]) < 3
        or len(meta["impls"]) < 4
    ):
        L += [
            "> Partial run (not every shape, thread count, cell or implementation): targets "
            "that need the missing parts are not evaluated.",
            "",
        ]
    cpus = res["machine"].get("usable_cpus") or 1
    try:
        load = float(meta["loadavg_start"].split()[0])
    except (ValueError, IndexError, AttributeError):
        load = 0.0
    if load > 0.5 * cpus:
        L += [
            f"> **The machine was busy when this run started** (1-min load average {load:g} "
            f"on {cpus} CPUs): other processes competed for the cores, so these timings are "
            "not a measurement of the implementations.",
            "",
        ]
    if res["failures"]:
        L += ["## FAILURES", ""] + [f"- {f}" for f in res["failures"]] + [""]
    L += ["## Machine", ""] + _machine_md(res) + [""]
    L += [
        "## Roofline: float32 2048×2048 @ 2048×2048, and the FMA peak",
        "",
        "FMA peak: rnncore's register-only loop of independent FMAs in the imported module's "
        f"vector width (isa {res['machine']['rnncore_build'].get('isa')}), no memory "
        "traffic, each thread's rate over its own CPU time: the physical limit every other "
        "figure is read against.",
        "",
        "| threads | NumPy GFLOP/s | PyTorch GFLOP/s | roofline (best) | FMA peak GFLOP/s "
        "| roofline / peak |",
        "|---|---|---|---|---|---|",
    ]
    for t, r in res["roofline"].items():
        peak = r.get("fma_peak_gflops")
        L.append(
            f"| {t} | {_f(r['numpy']['gflops'], 3)} | "
            f"{_f(r['torch']['gflops'], 3) if 'torch' in r else '–'} | "
            f"**{_f(r['gflops'], 3)}** ({r['best']}) | {_f(peak, 3) if peak else '–'} | "
            f"{_pct(r['gflops'], peak)} |"
        )
    L += [
        "",
        "## Speed",
        "",
        "Median of the timed rounds. GFLOP/s use the forward count 2·T·B·G·H·(D+H) "
        "(G = 1/4/3; T = 1 per streaming step); % roof = rnncore GFLOP/s / roofline at the "
        "same thread count; % peak = rnncore GFLOP/s / FMA peak at the same thread count; "
        "spread = half the inter-quartile range of rnncore's samples. "
        "**× peer = peer time / rnncore time** (> 1: rnncore is faster); best peer = the "
        "fastest of the other implementations.",
        "",
    ]
    threads_list = sorted({r["threads"] for r in res["rows"]})
    shown = []
    for r in res["rows"]:
        if (r["shape"], r["mode"]) not in shown:
            shown.append((r["shape"], r["mode"]))
    for shape, mode in shown:
        L += _case_table(res, shape, mode, threads_list, idx)
    if len(threads_list) > 1:
        t0, t1 = threads_list[0], threads_list[-1]
        L += [
            f"## Thread scaling ({t0} → {t1} threads, time ratio)",
            "",
            "| shape | cell | " + " | ".join(IMPL_LABELS[i] for i in ("rnncore",) + PEERS) + " |",
            "|---|---|" + "---|" * (1 + len(PEERS)),
        ]
        for shape, mode in shown:
            for cell in meta["cells"]:
                vals = []
                for impl in ("rnncore",) + PEERS:
                    a = idx.get((shape, mode, cell, impl, t0))
                    b = idx.get((shape, mode, cell, impl, t1))
                    vals.append(f"{a['ms'] / b['ms']:.2f}×" if a and b else "–")
                if vals[0] != "–":
                    L.append(f"| {shape} | {cell} | " + " | ".join(vals) + " |")
        L.append("")
    if res["memory"]:
        shape = res["meta"].get("memory_shape", "S4")
        L += [
            f"## Peak memory at {shape} (fresh process per implementation)",
            "",
            "forward peak = peak RSS during two forward calls minus the RSS before them "
            "(after the data and the model/session were built); setup = RSS growth while "
            "building the model/session; process = the whole process's peak RSS, library "
            "imports included (each process imports only what it measures).",
            "",
            "| cell | thr | implementation | forward peak MiB | setup MiB | process MiB |",
            "|---|---|---|---|---|---|",
        ]
        for m in res["memory"]:
            L.append(
                f"| {m['cell']} | {m['threads']} | {IMPL_LABELS[m['impl']]} | "
                f"{m['forward_peak_mib']:.1f} | {m['setup_mib']:.1f} | "
                f"{m['process_peak_mib']:.0f} |"
            )
        L += ["", f"Method: {res['memory'][0]['method']}.", ""]
    L += ["## Targets", ""]
    if meta["quick"]:
        L += ["Quick mode: shown for completeness, not meaningful.", ""]
    if res["targets"]:
        L += ["| target | scope | measured | status |", "|---|---|---|---|"]
        for t in res["targets"]:
            L.append(f"| {t['target']} | {t['scope']} | {t['measured']} | {t['status']} |")
    else:
        L.append("No target applies to what was measured.")
    L += [
        "",
        "## Correctness (checked before timing)",
        "",
        f"Max |output − rnncore output| (float32, tolerance {meta['tol']:g}); every "
        "implementation gets the same weights and inputs.",
        "",
        "| shape | mode | cell | thr | " + " | ".join(IMPL_LABELS[p] for p in PEERS) + " |",
        "|---|---|---|---|" + "---|" * len(PEERS),
    ]
    for shape, mode, t, cell in _groups(res):
        vals = []
        for p in PEERS:
            r = idx.get((shape, mode, cell, p, t))
            vals.append(f"{r['max_abs_diff']:.1e}" if r else "–")
        L.append(f"| {shape} | {mode} | {cell} | {t} | " + " | ".join(vals) + " |")
    notes = list(res["notes"]) + [f"skipped: {s}" for s in res["skipped"]]
    if notes:
        L += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------------------

COLORS = {
    "rnncore": "#d62728",
    "reference": "#7f7f7f",
    "torch": "#1f77b4",
    "onnxruntime": "#2ca02c",
}


def chart(res, path: Path) -> str | None:
    """Grouped bars of GFLOP/s (log scale): one panel per (thread count, shape/mode), one
    group per cell, the roofline as a dashed line. Returns an error note or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return "matplotlib is not installed: no chart written (pip install matplotlib)"
    idx = _index(res)
    rows = [r for r in res["rows"] if r["gflops"]]
    if not rows:
        return "nothing with a GFLOP/s figure to chart"
    panels = []
    for r in rows:
        if (r["shape"], r["mode"]) not in panels:
            panels.append((r["shape"], r["mode"]))
    threads = sorted({r["threads"] for r in rows})
    cells = res["meta"]["cells"]
    impl_order = [i for i in ("rnncore",) + PEERS if any(r["impl"] == i for r in rows)]
    fig, axes = plt.subplots(
        len(threads),
        len(panels),
        squeeze=False,
        layout="constrained",
        figsize=(3.6 * len(panels) + 1, 3.2 * len(threads) + 0.9),
    )
    width = 0.8 / len(impl_order)
    for i, t in enumerate(threads):
        roof = res["roofline"].get(str(t), {}).get("gflops")
        for j, (shape, mode) in enumerate(panels):
            ax = axes[i][j]
            for k, impl in enumerate(impl_order):
                xs, ys = [], []
                for c, cell in enumerate(cells):
                    r = idx.get((shape, mode, cell, impl, t))
                    if r and r["gflops"]:
                        xs.append(c + (k - (len(impl_order) - 1) / 2) * width)
                        ys.append(r["gflops"])
                ax.bar(
                    xs,
                    ys,
                    width,
                    color=COLORS[impl],
                    label=IMPL_LABELS[impl] if (i, j) == (0, 0) else None,
                )
            for c, cell in enumerate(cells):  # rnncore's speed-up over the best peer
                rn = idx.get((shape, mode, cell, "rnncore", t))
                _, b = _best_peer(_peer_rows(idx, shape, mode, cell, t))
                if rn and b and rn["gflops"]:
                    ax.annotate(
                        f"{b['ms'] / rn['ms']:.2f}×",
                        (c - (len(impl_order) - 1) / 2 * width, rn["gflops"]),
                        textcoords="offset points",
                        xytext=(0, 2),
                        ha="center",
                        fontsize=7,
                    )
            if roof and mode != "stream":
                ax.axhline(roof, ls="--", color="k", lw=0.8)
                ax.text(
                    len(cells) - 0.5, roof, "matmul roofline", ha="right", va="bottom", fontsize=7
                )
            ax.set_yscale("log")
            vals = [
                r["gflops"]
                for r in rows
                if (r["shape"], r["mode"], r["threads"]) == (shape, mode, t)
            ]
            if vals:  # bars start at a power of ten, not at the smallest bar
                ax.set_ylim(bottom=10 ** math.floor(math.log10(min(vals))))
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xticks(range(len(cells)))
            ax.set_xticklabels(cells, fontsize=8)
            sh = res["shapes"][shape]
            ax.set_title(f"{shape} {sh['label']} ({mode}), {t} thr", fontsize=9)
            if j == 0:
                ax.set_ylabel("GFLOP/s (log)")
    fig.suptitle(
        f"rnncore benchmark — {res['machine']['cpu']} — {res['meta']['date'][:10]}"
        + (" (quick run: not a measurement)" if res["meta"]["quick"] else "")
        + "\nlabel over the rnncore bar: speed-up over the best peer (peer time / "
        "rnncore time)",
        fontsize=9,
    )
    fig.legend(loc="outside lower center", ncol=len(impl_order), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_all(res, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = (
        stem.with_name(stem.name + ".png")
        if stem.name != "results"
        else stem.with_name("chart.png")
    )
    err = chart(res, png)
    if err:
        res["notes"].append(err)
        print(f"NOTE: {err}")
    md = stem.with_suffix(".md")
    js = stem.with_suffix(".json")
    md.write_text(markdown(res))
    js.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return [md, js] + ([] if err else [png])
