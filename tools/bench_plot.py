#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turns wxa_bench's JSON output into plots (SVG or PNG) and Markdown tables.

    build/bench/wxa_bench --benchmark_out=bench.json --benchmark_out_format=json
    tools/bench_plot.py bench.json --plot docs/benchmarks.png docs/benchmarks.svg \
        --markdown out.md

--plot draws what wxa_bench's summary prints: ns per function by strategy
(log scale) for 256-byte functions published at batch 1, 64 and 1024 and for
startup, each bar annotated with its ratio to asmjit_rwx, and the memory
workload's resident memory per byte of live code; it tells strict W^X apart
from W^X per mapping with a permanent writable alias of the code and from no
W^X, and marks the strategies that were refused. --publish-plot draws ns per
function against batch size (log-log), one line per strategy and one panel
per function size. The Markdown holds the publish
tables (size 256 and 65536) with ratios to asmjit_rwx and naive_mmap, the
startup, churn, vma_pressure and threads figures, the example JIT on wxarena
against the same JIT on RWX memory, the memory workload, and the performance targets with
whether this run meets them. With --benchmark_repetitions, the medians are
used.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

# Plot order and style: wxarena first (solid), peers (dashed), floor (dotted).
STRATEGIES = [
    "wxarena_protect", "wxarena_dual", "wxarena_kernel_write", "wxarena_heap",
    "wxarena_heap_protect", "naive_mmap", "malloc_mprotect", "llvm_smm",
    "llvm_jitlink", "llvm_jitlink_wxarena",
    "asmjit_rwx", "asmjit_dual", "raw_rwx_floor",
]
# How far each strategy keeps W^X, as wxa_bench's summary says (strategy.hpp,
# Factory::wx): "strict" (no writable view of executable code) unless listed
# here. "alias": each mapping is W^X, but a writable alias of the code lives
# as long as the code (an arbitrary write changes code at any time);
# "no": writable and executable at once.
WX = {"asmjit_rwx": "no", "raw_rwx_floor": "no", "asmjit_dual": "alias"}
WX_COLOR = {"strict": "#2a6fb0", "alias": "#e08a1e", "no": "#b5b5b5"}
WX_LABEL = {"strict": "", "alias": " (writable alias)", "no": " (no W^X)"}
# What the summary and --plot compare against.
REFERENCE = "asmjit_rwx"
# The example JIT (startup/example_jit_*): its own table, not a strategy.
EXAMPLE_JIT = ["example_jit_wxarena", "example_jit_rwx"]
SIZES = [64, 256, 4096, 65536]
BATCHES = [1, 64, 1024]


def parse_name(name):
    """'publish/x/size:256/batch:64/real_time/threads:2' -> (workload, strategy, params)."""
    parts = name.split("/")
    params = {}
    for part in parts[2:]:
        key, sep, value = part.partition(":")
        if sep:
            try:
                params[key] = int(value)
            except ValueError:
                params[key] = value
    return parts[0], parts[1] if len(parts) > 1 else "", params


class Results:
    """The runs of one JSON file, keyed by (workload, strategy, params)."""

    def __init__(self, doc):
        self.context = doc.get("context", {})
        runs = defaultdict(list)
        errors = {}
        aggregates = {}
        self.names = {}
        for b in doc.get("benchmarks", []):
            name = b.get("run_name", b["name"])
            workload, strategy, params = parse_name(name)
            key = (workload, strategy, tuple(sorted(params.items())))
            self.names[key] = name
            if b.get("error_occurred"):
                errors[key] = b.get("error_message", "error")
                continue
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median":
                    aggregates[key] = b
                continue
            runs[key].append(b)
        self.errors = errors
        self.data = dict(aggregates)  # also with --benchmark_report_aggregates_only
        for key, rs in runs.items():
            if key in aggregates:
                continue
            merged = dict(rs[0])
            for field in rs[0]:
                values = [r[field] for r in rs if isinstance(r.get(field), (int, float))]
                if len(values) == len(rs) and len(rs) > 1:
                    merged[field] = statistics.median(values)
            self.data[key] = merged

    def get(self, workload, strategy, **params):
        key = (workload, strategy, tuple(sorted(params.items())))
        return self.data.get(key)

    def error(self, workload, strategy, **params):
        key = (workload, strategy, tuple(sorted(params.items())))
        return self.errors.get(key)

    def value(self, field, workload, strategy, **params):
        run = self.get(workload, strategy, **params)
        if run is None:
            return None
        return run.get(field)

    def strategies(self):
        seen = {k[1] for k in self.data if k[0] != "host"} | \
            {k[1] for k in self.errors if k[0] != "host"}
        seen -= set(EXAMPLE_JIT)
        known = [s for s in STRATEGIES if s in seen]
        return known + sorted(seen - set(known))

    def example_jit(self, strategy):
        """(params, run or None, error or None) of startup/<strategy>, whatever
        its size (50,000 functions in a full run, fewer in --smoke)."""
        for source in (self.data, self.errors):
            for key, value in source.items():
                if key[0] == "startup" and key[1] == strategy:
                    params = dict(key[2])
                    if source is self.data:
                        return params, value, None
                    return params, None, value
        return None, None, None


def fmt_ns(ns):
    if ns is None:
        return "–"
    if ns >= 1e9:
        return f"{ns / 1e9:,.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} µs"
    if ns >= 1e3:
        return f"{ns / 1e3:,.2f} µs"
    return f"{ns:,.0f} ns"


def fmt_num(x, digits=2):
    if x is None:
        return "–"
    if x == int(x) and abs(x) >= 1:
        return f"{int(x):,}"
    if abs(x) < 0.01 and x != 0:
        return f"{x:.4f}"
    return f"{x:,.{digits}f}"


def fmt_ratio(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}×"
    if x >= 10:
        return f"{x:.1f}×"
    if x >= 0.1:
        return f"{x:.2f}×"
    return f"{x:.2g}×"


def wx(strategy):
    return WX.get(strategy, "strict")


def fmt_error(message):
    """A table cell for a run that ended in an error (details below the tables)."""
    return "refused¹" if ": refused: " in (message or "") else "error¹"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(header, rows):
    if not rows:
        return "(not in this run)"
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def publish_tables(r, size):
    strategies = r.strategies()
    ns = {(s, b): r.value("ns_per_fn", "publish", s, size=size, batch=b)
          for s in strategies for b in BATCHES}
    rows = []
    for s in strategies:
        row = [f"`{s}`"]
        for b in BATCHES:
            err = r.error("publish", s, size=size, batch=b)
            if ns[(s, b)] is None and err:
                row.append(fmt_error(err))
            else:
                row.append(fmt_ns(ns[(s, b)]))
        b64 = r.get("publish", s, size=size, batch=64) or {}
        row += [fmt_num(b64.get("syscalls_per_fn"), 3),
                fmt_num(b64.get("mprotect_per_fn"), 3),
                fmt_num(b64.get("vmas"))]
        rows.append(row)
    out = [f"#### publish, {size}-byte functions: time per function",
           "",
           table(["strategy"] + [f"batch {b}" for b in BATCHES]
                 + ["syscalls/fn (b64)", "mprotect/fn (b64)", "VMAs (b64)"], rows)]
    for ref in ("asmjit_rwx", "naive_mmap"):
        if not any(ns.get((ref, b)) for b in BATCHES):
            continue
        rows = []
        for s in strategies:
            rows.append([f"`{s}`"] + [fmt_ratio(ratio(ns[(s, b)], ns[(ref, b)]))
                                      for b in BATCHES])
        out += ["", f"Ratio to `{ref}` (time per function; below 1 is faster):", "",
                table(["strategy"] + [f"batch {b}" for b in BATCHES], rows)]
    return "\n".join(out)


def startup_table(r):
    rows = []
    floor = r.value("ns_per_fn", "startup", "raw_rwx_floor", functions=50000, batch=256)
    asm = r.value("ns_per_fn", "startup", "asmjit_rwx", functions=50000, batch=256)
    for s in r.strategies():
        run = r.get("startup", s, functions=50000, batch=256)
        if run is None:
            err = r.error("startup", s, functions=50000, batch=256)
            if err:
                rows.append([f"`{s}`", fmt_error(err), "", "", "", "", ""])
            continue
        ns = run.get("ns_per_fn")
        rows.append([f"`{s}`", fmt_ns(ns * 50000 if ns else None), fmt_ns(ns),
                     fmt_ratio(ratio(ns, floor)), fmt_ratio(ratio(ns, asm)),
                     fmt_num(run.get("syscalls_per_fn"), 4), fmt_num(run.get("vmas"))])
    return table(["strategy", "total", "per function", "× raw_rwx_floor",
                  "× asmjit_rwx", "syscalls/fn", "VMAs"], rows)


def example_jit_ratio(r):
    """example_jit_wxarena / example_jit_rwx, time per function, or None."""
    _, wx, _ = r.example_jit("example_jit_wxarena")
    _, rwx, _ = r.example_jit("example_jit_rwx")
    if wx is None or rwx is None:
        return None
    return ratio(wx.get("ns_per_fn"), rwx.get("ns_per_fn"))


def example_jit_table(r):
    rows = []
    _, rwx, _ = r.example_jit("example_jit_rwx")
    rwx_ns = rwx.get("ns_per_fn") if rwx else None
    for s in EXAMPLE_JIT:
        params, run, err = r.example_jit(s)
        if run is None:
            if err:
                rows.append([f"`{s}`", fmt_error(err)] + [""] * 9)
            continue
        ns = run.get("ns_per_fn")
        functions = params.get("functions", 0)
        rows.append([f"`{s}`", fmt_ns(ns * functions if ns else None), fmt_ns(ns),
                     fmt_ratio(ratio(ns, rwx_ns))]
                    + [fmt_ns(run.get(k)) for k in
                       ("compile_ns", "add_ns", "publish_ns", "run_ns")]
                    + [fmt_num(run.get("syscalls_per_fn"), 4),
                       fmt_num(run.get("mprotect_per_fn"), 4), fmt_num(run.get("vmas"))])
    return table(["variant", "total", "per function", "× example_jit_rwx",
                  "compile", "copy in", "publish", "run", "syscalls/fn",
                  "mprotect/fn", "VMAs"], rows)


def churn_table(r):
    rows = []
    for s in r.strategies():
        run = r.get("churn", s, live=2000, ops=32)
        if run is None:
            err = r.error("churn", s, live=2000, ops=32)
            if err:
                rows.append([f"`{s}`", fmt_error(err), "", "", ""])
            continue
        rows.append([f"`{s}`", fmt_ns(run.get("ns_per_fn")),
                     fmt_num(run.get("syscalls_per_fn"), 3),
                     fmt_num(run.get("committed_per_live")), fmt_num(run.get("vmas"))])
    return table(["strategy", "per function", "syscalls/fn", "committed / live",
                  "VMAs"], rows)


def vma_table(r):
    rows = []
    for s in r.strategies():
        run = r.get("vma_pressure", s, live=20000, size=256, iterations=1)
        if run is None:
            err = r.error("vma_pressure", s, live=20000, size=256, iterations=1)
            if err:
                rows.append([f"`{s}`", fmt_error(err), "", "", ""])
            continue
        rows.append([f"`{s}`", fmt_num(run.get("vmas")),
                     fmt_num(run.get("vmas_after_free")),
                     fmt_num(run.get("committed_per_live")),
                     fmt_num(run.get("committed_per_live_after_free"))])
    return table(["strategy", "VMAs, 20,000 live", "VMAs, every 2nd freed",
                  "committed / live", "after freeing"], rows)


def memory_runs(r):
    """{strategy: run or error message} of the memory workload, whatever its
    size (100,000 functions in a full run, fewer in --smoke)."""
    out = {}
    for source in (r.data, r.errors):
        for key, value in source.items():
            if key[0] == "memory":
                out.setdefault(key[1], (dict(key[2]), value if source is r.data else None,
                                        value if source is r.errors else None))
    return out


def memory_table(r):
    runs = memory_runs(r)
    rows = []
    for s in r.strategies():
        if s not in runs:
            continue
        params, run, err = runs[s]
        if run is None:
            rows.append([f"`{s}`", wx(s), fmt_error(err)] + [""] * 6)
            continue
        rows.append([f"`{s}`", wx(s), fmt_ratio(run.get("resident_per_code")),
                     fmt_num(run.get("resident_mib"), 1),
                     fmt_num(run.get("released_mib"), 1),
                     fmt_num(run.get("trimmed_mib"), 1),
                     fmt_ratio(run.get("address_space_per_reservation")),
                     fmt_num(run.get("address_space_mib"), 0),
                     fmt_num(run.get("empty_mib"), 1)])
    return table(["strategy", "W^X", "resident / code", "resident (MiB)",
                  "after release (MiB)", "after trim (MiB)", "address space / reserved",
                  "address space (MiB)", "empty strategy (MiB)"], rows)


def threads_table(r):
    rows = []
    for s in r.strategies():
        one = r.value("fn_per_s", "threads", s, size=256, batch=64, threads=1)
        two = r.value("fn_per_s", "threads", s, size=256, batch=64, threads=2)
        if one is None and two is None:
            continue
        rows.append([f"`{s}`", fmt_num(one / 1e3 if one else None, 0),
                     fmt_num(two / 1e3 if two else None, 0), fmt_ratio(ratio(two, one))])
    return table(["strategy", "1 thread (k fn/s)", "2 threads (k fn/s)", "speed-up"], rows)


def targets(r):
    """The kernel_write backend's performance targets (the tables of
    docs/benchmarks.md), each with the figure measured in this run."""
    def ns(s, size, batch):
        return r.value("ns_per_fn", "publish", s, size=size, batch=batch)

    rows = []

    def check(text, measured, ok):
        state = "–" if ok is None else ("met" if ok else "**missed**")
        rows.append([text, measured, state])

    def at_most(text, x, limit):
        check(text, fmt_ratio(x), None if x is None else x <= limit)

    def faster(text, x, limit):
        check(text, fmt_ratio(x) + " faster" if x else "–",
              None if x is None else x >= limit)

    at_most("publish heap 256 B batch 1024 ≤ 0.25 × asmjit_rwx",
            ratio(ns("wxarena_heap", 256, 1024), ns("asmjit_rwx", 256, 1024)), 0.25)
    at_most("publish heap 256 B batch 64 ≤ 2 × asmjit_rwx",
            ratio(ns("wxarena_heap", 256, 64), ns("asmjit_rwx", 256, 64)), 2)
    run = r.get("host", "pwrite_memfd", bytes=4096)
    pwrite = None
    if run and run.get("real_time") is not None:
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}.get(run.get("time_unit", "ns"), 1)
        pwrite = run["real_time"] * scale
    at_most("publish heap 256 B batch 1 ≤ 1.5 × one 4 KiB pwrite (host/)",
            ratio(ns("wxarena_heap", 256, 1), pwrite), 1.5)
    faster("publish heap 256 B batch 64 ≥ 100 × faster than naive_mmap",
           ratio(ns("naive_mmap", 256, 64), ns("wxarena_heap", 256, 64)), 100)
    faster("publish heap 256 B batch 64 ≥ 10 × faster than llvm_smm",
           ratio(ns("llvm_smm", 256, 64), ns("wxarena_heap", 256, 64)), 10)
    faster("publish kernel_write 256 B batch 1 ≥ 8 × faster than naive_mmap",
           ratio(ns("naive_mmap", 256, 1), ns("wxarena_kernel_write", 256, 1)), 8)
    at_most("publish heap 64 KiB batch 64 ≤ 0.5 × asmjit_rwx",
            ratio(ns("wxarena_heap", 65536, 64), ns("asmjit_rwx", 65536, 64)), 0.5)
    asm = r.value("ns_per_fn", "startup", "asmjit_rwx", functions=50000, batch=256)
    at_most("startup `wxarena_heap` ≤ 0.25 × asmjit_rwx",
            ratio(r.value("ns_per_fn", "startup", "wxarena_heap",
                          functions=50000, batch=256), asm), 0.25)
    params, run, _ = memory_runs(r).get("wxarena_heap", ({}, None, None))
    if run is not None:
        code_mib = params.get("functions", 0) * params.get("size", 0) / 2**20
        res = run.get("resident_mib")
        check(f"memory `wxarena_heap`: resident ≤ 1.15 × code + 2 MiB "
              f"({code_mib:.1f} MiB of code)",
              f"{fmt_ratio(run.get('resident_per_code'))} ({fmt_num(res, 1)} MiB)",
              None if res is None else res <= 1.15 * code_mib + 2)
        t = run.get("trimmed_mib")
        check("memory `wxarena_heap`: after releasing all, publish and trim "
              "≤ 2 MiB above the empty arena", f"{fmt_num(t, 1)} MiB",
              None if t is None else t <= 2)
        at_most("memory `wxarena_heap`: address space ≤ 1.3 × the reservation",
                run.get("address_space_per_reservation"), 1.3)
    x = example_jit_ratio(r)
    check("example JIT end to end: wxarena ≤ 1.02 × the same JIT on RWX",
          f"{x:.3f}×" if x is not None else "–", None if x is None else x <= 1.02)
    one = r.value("fn_per_s", "threads", "wxarena_heap", size=256, batch=64, threads=1)
    two = r.value("fn_per_s", "threads", "wxarena_heap", size=256, batch=64, threads=2)
    x = ratio(two, one)
    check("threads `wxarena_heap`: 2 threads ≥ 1.6 × one thread",
          fmt_ratio(x), None if x is None else x >= 1.6)
    worst = None
    for batch in (64, 1024):
        m = r.value("mprotect_per_fn", "publish", "wxarena_heap", size=256, batch=batch)
        if m is not None:
            worst = m if worst is None else max(worst, m)
    check("steady state: heap publishes with 0 mprotect (256 B, batch 64 and 1024)",
          "worst " + fmt_num(worst, 4) if worst is not None else "–",
          None if worst is None else worst == 0)
    for s in ("wxarena_kernel_write", "wxarena_heap"):
        run = r.get("vma_pressure", s, live=20000, size=256, iterations=1)
        if run is None:
            continue
        a, b = run.get("vmas"), run.get("vmas_after_free")
        check(f"vma_pressure `{s}` ≤ 4 VMAs, and after freeing every second",
              f"{fmt_num(a)} / {fmt_num(b)}",
              None if a is None or b is None else max(a, b) <= 4)
    return table(["target", "this run", "verdict"], rows)


def markdown(r):
    ctx = r.context
    out = ["### Machine", "",
           f"- {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz "
           f"({ctx.get('cores', '')})",
           f"- {ctx.get('kernel', 'kernel ?')}; load average at the start "
           f"{', '.join(f'{x:.2f}' for x in ctx.get('load_avg', [])) or '?'}",
           f"- run {ctx.get('date', '?')}, {ctx.get('executable', 'wxa_bench')}",
           f"- syscall counter: {ctx.get('syscall_counter', '?')}", ""]
    out += ["### Targets", "", targets(r), ""]
    for size in (256, 65536):
        out += [publish_tables(r, size), ""]
    out += ["#### startup: 50,000 functions of 32–512 bytes, published in batches of 256",
            "", startup_table(r), "",
            "#### startup, the example JIT: the same expressions compiled with Xbyak, "
            "published in batches of 1,024, and run, on wxarena (strict W^X) and on RWX memory",
            "", example_jit_table(r), "",
            "#### churn: 2,000 live functions of 32–2,048 bytes, 32 freed and 32 published per step",
            "", churn_table(r), "",
            "#### vma_pressure: 20,000 live 256-byte functions", "", vma_table(r), "",
            "#### memory: 100,000 live 256-byte functions published 256 at a time, then "
            "all released, settled and trimmed (twice); resident memory (anonymous and "
            "shared, each page once) above the empty strategy", "", memory_table(r), "",
            "#### threads: publish 256 B, batch 64", "", threads_table(r), ""]
    if r.errors:
        out += ["¹ Errors reported by the run:", ""]
        for key, message in sorted(r.errors.items(), key=lambda kv: r.names[kv[0]]):
            out.append(f"- `{r.names[key]}`: {message}")
        out.append("")
    return "\n".join(out)


def import_matplotlib():
    try:
        import matplotlib
    except ImportError:
        sys.exit(f"bench_plot.py: plotting needs matplotlib, which {sys.executable} "
                 "lacks (Debian: apt install python3-matplotlib, then run this "
                 "script with /usr/bin/python3)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    # Text stays text, and the same input gives the same file.
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "wxa_bench"
    return matplotlib, plt


def save(fig, path):
    fig.savefig(path, dpi=110,
                metadata={"Date": None} if path.endswith(".svg") else None)


def summary_scenarios(r):
    """[(title, workload, params)] of what wxa_bench's summary shows and this
    run has: publish 256 B at batch 1, 64, 1024, then startup (the largest
    function count run)."""
    out = []
    for b in BATCHES:
        key = dict(size=256, batch=b)
        if any(r.get("publish", s, **key) or r.error("publish", s, **key)
               for s in r.strategies()):
            out.append((f"publish 256-byte functions, batch {b}", "publish", key))
    counts = {dict(k[2]).get("functions") for src in (r.data, r.errors) for k in src
              if k[0] == "startup" and k[1] not in EXAMPLE_JIT}
    counts.discard(None)
    if counts:
        n = max(counts)
        batch = 256
        for src in (r.data, r.errors):
            for k in src:
                if k[0] == "startup" and dict(k[2]).get("functions") == n:
                    batch = dict(k[2]).get("batch", batch)
        out.append((f"startup: {n:,} functions of 32–512 bytes", "startup",
                    dict(functions=n, batch=batch)))
    return out


def plot(r, paths):
    """The summary's comparison: one panel per scenario, one bar per strategy,
    and a panel for the memory workload."""
    matplotlib, plt = import_matplotlib()
    scenarios = summary_scenarios(r)
    memory = memory_runs(r)
    if not scenarios and not memory:
        sys.exit("bench_plot.py: no publish (256 B), startup or memory results to plot")
    strategies = r.strategies()
    panels = len(scenarios) + (1 if memory else 0)
    cols = 2 if panels > 1 else 1
    rows = (panels + cols - 1) // cols
    height = 0.32 * len(strategies) + 1.3
    fig, axes = plt.subplots(rows, cols, figsize=(7.2 * cols, height * rows + 1.0),
                             squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    # One scale for all panels, so that bars compare across them too.
    present = [v for _, workload, params in scenarios for s in strategies
               for v in [r.value("ns_per_fn", workload, s, **params)] if v]
    lo = min(present) if present else 1.0
    hi = max(present) if present else 10.0

    def missing(ax, y, err, at):
        text = ("refused by the OS" if err and ": refused: " in err
                else "error" if err else "not run")
        ax.text(at, y, text, va="center", fontsize=8.5,
                style="italic", color="#a03030" if err else "#777777")

    def labels(ax, title, xlabel):
        ax.set_yticks(list(range(len(strategies))))
        ax.set_yticklabels([s + WX_LABEL[wx(s)] for s in strategies], fontsize=9)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10.5)
        ax.grid(True, axis="x", which="major", alpha=0.3)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(axis="x", labelsize=8.5)

    for ax, (title, workload, params) in zip(axes.flat, scenarios):
        ref = r.value("ns_per_fn", workload, REFERENCE, **params)
        for y, s in enumerate(strategies):
            v = r.value("ns_per_fn", workload, s, **params)
            if v:
                ax.barh(y, v - lo / 4, left=lo / 4, height=0.7, color=WX_COLOR[wx(s)])
                x = ratio(v, ref)
                label = f"{fmt_ns(v)}  {fmt_ratio(x)}" if x else fmt_ns(v)
                ax.text(v * 1.12, y, label, va="center", fontsize=8.5)
            else:
                missing(ax, y, r.error(workload, s, **params), lo / 3.5)
        ax.set_xscale("log")
        # Room on the right for the longest bar's label.
        ax.set_xlim(lo / 4, hi * 25)
        labels(ax, title, "ns per function (log scale)")
    if memory:
        ax = axes.flat[len(scenarios)]
        values = [memory[s][1].get("resident_per_code") if s in memory and memory[s][1]
                  else None for s in strategies]
        top = max([v for v in values if v] or [1.0])
        base = 0.25
        for y, s in enumerate(strategies):
            v = values[y]
            if v is None:
                missing(ax, y, memory[s][2] if s in memory else None, base * 1.1)
                continue
            run = memory[s][1]
            if v <= base:  # nothing above the empty strategy (populated up front)
                ax.text(base * 1.1, y, f"{fmt_ratio(v)} (held from the start)",
                        va="center", fontsize=8.5)
                continue
            ax.barh(y, v - base, left=base, height=0.7, color=WX_COLOR[wx(s)])
            label = f"{fmt_ratio(v)}, {fmt_num(run.get('trimmed_mib'), 1)} MiB trimmed"
            if run.get("address_space_per_reservation") is not None:
                label += f", AS {fmt_ratio(run['address_space_per_reservation'])}"
            ax.text(v * 1.12, y, label, va="center", fontsize=8.5)
        ax.set_xscale("log")
        ax.set_xlim(base, top * 40)
        n = next(iter(memory.values()))[0].get("functions", 0)
        labels(ax, f"memory: {n:,} live 256-byte functions, then all released",
               "resident per byte of code (log scale); MiB left after trim; "
               "address space / reserved")
    fig.suptitle("wxa_bench: time per function, lower is better; "
                 f"× = ratio to {REFERENCE} in the same run\n(blue: strict W^X; "
                 "orange: W^X per mapping, but a writable alias of the code lives as "
                 "long as it; grey: no W^X, writable and executable memory)",
                 fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    for path in paths:
        save(fig, path)
    plt.close(fig)


def plot_publish(r, path):
    matplotlib, plt = import_matplotlib()

    strategies = r.strategies()
    sizes = [size for size in SIZES
             if any(r.get("publish", s, size=size, batch=b)
                    for s in strategies for b in BATCHES)]
    if not sizes:
        sys.exit("bench_plot.py: no publish results to plot")
    colors = plt.get_cmap("tab10")
    cols = 2 if len(sizes) > 1 else 1
    rows = (len(sizes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows + 0.9),
                             squeeze=False)
    for ax in axes.flat[len(sizes):]:
        ax.set_visible(False)
    legend = {}
    for ax, size in zip(axes.flat, sizes):
        for i, s in enumerate(strategies):
            points = [(b, r.value("ns_per_fn", "publish", s, size=size, batch=b))
                      for b in BATCHES]
            points = [(b, v) for b, v in points if v]
            if not points:
                continue
            style = "-" if s.startswith("wxarena") else (":" if s == "raw_rwx_floor" else "--")
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], style,
                              marker="o", markersize=4, color=colors(i % 10),
                              linewidth=2.2 if s.startswith("wxarena") else 1.4,
                              label=s)
            legend.setdefault(s, line)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(BATCHES)
        ax.set_xticklabels([str(b) for b in BATCHES])
        ax.minorticks_off()
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10))
        ax.set_title(f"{size}-byte functions")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("functions published together (batch)")
        ax.set_ylabel("ns per function")
    order = [s for s in strategies if s in legend]
    fig.legend([legend[s] for s in order], order, loc="lower center", ncol=5,
               frameon=False)
    fig.suptitle("publish: allocate, write, make executable, call, free "
                 "(ns per function, lower is better)")
    fig.tight_layout(rect=(0, 0.9 / (4.2 * rows + 0.9) + 0.02, 1, 0.96))
    save(fig, path)
    plt.close(fig)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="wxa_bench --benchmark_format=json output")
    ap.add_argument("--plot", nargs="+", metavar="FILE",
                    help="write the summary's comparison here (.svg or .png; "
                    "several files for several formats)")
    ap.add_argument("--publish-plot", metavar="FILE",
                    help="write the publish plot (ns per function against "
                    "batch, one panel per size) here (.svg or .png)")
    ap.add_argument("--markdown", help="write the tables here (default: stdout)")
    args = ap.parse_args(argv)

    with open(args.json, encoding="utf-8") as f:
        text = f.read()
    # --benchmark_format=json on stdout may follow other output: skip to '{'.
    start = text.find("{")
    if start < 0:
        sys.exit(f"{args.json}: no JSON object found")
    r = Results(json.loads(text[start:]))
    if not r.data and not r.errors:
        sys.exit(f"{args.json}: no benchmark results")

    md = markdown(r)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md)
    else:
        print(md)
    if args.plot:
        plot(r, args.plot)
    if args.publish_plot:
        plot_publish(r, args.publish_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
