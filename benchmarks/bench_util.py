"""Shared plumbing of the benchmarks: environment facts, interleaved timing, CSV rows, tables, plots.

Kept free of engine imports so it loads fast and works in every helper (including the per-variant
subprocesses of the paper-scale step).
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]  # the repository root
RESULTS = ROOT / "benchmarks" / "out"  # untracked: a run never modifies tracked files (see --results)


def require_iiae() -> None:
    """The benchmarks import the package `iiae` (this checkout, installed with `pip install -e .`); say so in one
    line when it is missing instead of failing deep inside an import."""
    try:
        import iiae  # noqa: F401
    except ImportError:
        sys.exit(f"{Path(sys.argv[0]).name}: the package `iiae` is not installed in {sys.executable}: run "
                 f"`pip install -e .` (or `make setup`) in {ROOT} first")


# ---- environment ------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_info(device: str) -> dict:
    import torch

    info = {"type": device, "cpu": _cpu_model(), "cores": cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
    else:
        info["name"] = f"{info['cpu']} ({info['cores']} cores)"
    return info


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "triton", "accelerate", "webdataset", "numpy", "iiae"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import torch

        out["torch"] = torch.__version__  # the local version tag (+cpu, +cu128) matters here
        out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def git_sha() -> str:
    """Short HEAD sha, `-dirty` when tracked files differ from it; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def today() -> str:
    return _dt.date.today().isoformat()


# ---- other work on the machine ----------------------------------------------------------------------------
class CpuMonitor:
    """CPU time the whole machine spent busy (/proc/stat) minus what this process and its reaped children
    (loader workers, subprocesses) used: the average number of cores other work took while we measured.
    On 2 cores even 0.2 matters — the step's OpenMP threads then wait on preempted peers."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        hz = os.sysconf("SC_CLK_TCK")
        own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        steal = ticks[7] if len(ticks) > 7 else 0  # time the hypervisor gave our vCPUs to other guests
        return {"busy_s": (sum(ticks[:7]) - idle) / hz, "steal_s": steal / hz, "own_s": own,
                "wall": time.perf_counter()}

    def others(self) -> Optional[dict]:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end["wall"] - self.start["wall"]
        busy = end["busy_s"] - self.start["busy_s"]
        own = end["own_s"] - self.start["own_s"]
        return {"wall_s": round(wall, 1), "machine_busy_cores": round(busy / wall, 2),
                "own_cores": round(own / wall, 2), "other_cores": round(max(0.0, busy - own) / wall, 2),
                "steal_cores": round((end["steal_s"] - self.start["steal_s"]) / wall, 2)}


# ---- timing ----------------------------------------------------------------------------------------------
def sync_for(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def timed(run: Callable[[int], None], n: int, sync: Callable[[], None]) -> float:
    """Seconds per iteration of `run(n)` (n iterations, device work included)."""
    sync()
    tick = time.perf_counter()
    run(n)
    sync()
    return (time.perf_counter() - tick) / n


def iters_for(seconds_per_iter: float, block_seconds: float, lo: int = 1, hi: int = 10_000) -> int:
    return max(lo, min(hi, int(round(block_seconds / max(seconds_per_iter, 1e-9)))))


def interleaved(runners: dict[str, Callable[[int], None]], iters: int, rounds: int,
                sync: Callable[[], None]) -> dict[str, list[float]]:
    """Time the runners in alternating blocks of `iters` iterations, `rounds` times: A B, B A, A B, ...
    (the order flips every round so a drift in machine load hits both alike). Returns seconds per
    iteration of every block, per runner, in round order."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(runners[name], iters, sync))
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]: both blocks of a round ran back to back, so the
    load of the machine at that moment cancels in their ratio."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(values: list[float]) -> float:
    """Relative interquartile range of per-block times (0.05 = the middle half of the blocks within ±2.5 %)."""
    if len(values) < 4:
        return float("nan")
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / q[1]


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- CSV ---------------------------------------------------------------------------------------------------
CONTEXT_FIELDS = ["date", "device", "device_name", "cores", "git_sha", "python", "torch", "triton", "accelerate",
                  "webdataset", "quick"]


def context_row(context: dict) -> dict:
    v, d = context["versions"], context["device"]
    return {"date": context["date"], "device": d["type"], "device_name": d.get("name"), "cores": d.get("cores"),
            "git_sha": context["git_sha"], "python": v.get("python"), "torch": v.get("torch"),
            "triton": v.get("triton"), "accelerate": v.get("accelerate"), "webdataset": v.get("webdataset"),
            "quick": context.get("quick", False)}


def append_rows(folder: Path, section: str, fields: list[str], rows: Iterable[dict]) -> Optional[Path]:
    """Append rows to folder/<section>.csv. A file written by an older version with other columns keeps
    its header: unknown keys are dropped, missing ones left empty."""
    rows = list(rows)
    if not rows:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{section}.csv"
    header = fields
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            header = next(csv.reader(f), fields) or fields
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", restval="")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


# ---- text tables -------------------------------------------------------------------------------------------
def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits, 1)}g}" if abs(value) < 10 \
            else f"{value:.1f}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- plots -------------------------------------------------------------------------------------------------
def bar_chart(path: Path, title: str, groups: list[str], series: dict[str, list[float]], ylabel: str,
              notes: Optional[list[str]] = None, log: bool = False, hline: Optional[float] = None) -> Path:
    """Grouped bars: one group per label in `groups`, one bar per series; `notes` are printed above groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.9 * len(groups) * n * 0.6), 3.8))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [v if finite(v) else 0 for v in values], width, label=name)
    values = [v for vals in series.values() for v in vals if finite(v) and (v > 0 or not log)]
    top = max(values, default=1.0)
    if log:
        bottom = min(values, default=1.0) / 3
        ax.set_ylim(bottom=bottom, top=top * 6)
    else:
        ax.set_ylim(bottom=0, top=top * 1.2)
    if notes:
        for g, note in enumerate(notes):
            if note:
                ax.text(g, top * (1.5 if log else 1.04), note, ha="center", va="bottom", fontsize=8)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                       fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
