"""How fast is the engine, and where does the time go? Every figure is measured side by side in one run.

    python benchmarks/throughput.py                        # everything this machine can run
    python benchmarks/throughput.py --json --plot out/     # one JSON object on stdout, PNG charts in out/
    python benchmarks/throughput.py --quick                # tiny sizes, ~30 s: checks that it all works

Sections (see benchmarks/README.md for what each figure means):
  engine_vs_bare  `iiae.training.trainer.Trainer.train_step` (built as engine/train.py builds it) vs a bare PyTorch loop, same model
                  config and in-memory batch, interleaved timing blocks → samples/s each and the ratio (≥ 0.97)
  fastest_vs_bare the engine at each fast setting this device supports (channels-last, torch.compile, bf16 where
                  native) vs the bare fp32 eager loop, interleaved → the fastest accurate ratio (≥ 1.5)
  loader_vs_step  the streaming loader's samples/s (real shards, the recipe's num_workers) vs the step's (≥ 5)
  kernels         CUDA: the three fused kernels vs eager reference and torch.compile, GB/s vs peak
  paper_step      CUDA: MNIST-CDCB 256 px step, fp32 eager vs bf16 + fused kernels + compile (≥ 2×)
Rows are appended to benchmarks/out/<section>.csv (untracked; not for --quick unless --results is given);
`--results benchmarks/results` adds them to the tracked record.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

import bench_util as bu

bu.require_iiae()

DEFAULT_RECIPES = ["debug", "mnist_cdcb_cpu"]
SECTIONS = ("engine", "fast", "loader", "kernels", "paper")
NO_CUDA = "no CUDA"


def recipe_path(name: str) -> str:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return str(p)
    candidate = bu.ROOT / "recipes" / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if candidate.exists():
        return str(candidate)
    raise SystemExit(f"throughput.py: no recipe {name!r} (looked for {p} and {candidate})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", metavar="R",
                   help=f"recipe name or YAML for the engine and loader sections (repeatable; default "
                        f"{' '.join(DEFAULT_RECIPES)})")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available, else cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE, after every section")
    p.add_argument("--plot", metavar="DIR", help="write PNG bar charts into DIR")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (~30 s): a smoke test")
    p.add_argument("--data", metavar="DIR", help="shards for the loader section (default: the recipe's data.root "
                                                "if prepared, else synthetic shards made in a temp folder)")
    p.add_argument("--results", metavar="DIR", help="CSV folder (default benchmarks/out, untracked; "
                    "benchmarks/results is the tracked record; --quick writes none unless this is given)")
    p.add_argument("--no-save", action="store_true", help="append no CSV rows")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--peak-gbs", type=float, help="the device's peak memory bandwidth in GB/s (default: from a "
                                                 "table of known GPUs, else from the driver's clock × bus width)")
    p.add_argument("--paper-recipe", default="mnist_cdcb", help="recipe of the paper-scale step (default mnist_cdcb)")
    p.add_argument("--kernel-budget-s", type=float, default=240.0,
                   help="stop starting new kernel cases after this many seconds (default 240)")
    p.add_argument("--paper-timeout-s", type=float, default=300.0,
                   help="limit per variant process of the paper-scale step (default 300)")
    p.add_argument("--block-s", type=float, default=1.0,
                   help="seconds per timing block in the engine and fed-loader comparisons (default 1)")
    p.add_argument("--gpu-sections-anyway", action="store_true",
                   help="run the kernel and paper sections without CUDA too: checks the code path only, the "
                        "timings mean nothing")
    p.add_argument("--profile", metavar="DIR", help="also write torch.profiler tables of engine vs bare steps and "
                                                   "a cProfile of the loader into DIR")
    args = p.parse_args(argv)
    from iiae.device import resolve_device
    from iiae.errors import UserError

    try:
        args.device = resolve_device(args.device).type
    except UserError as err:
        p.error(str(err))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    args.recipes = [recipe_path(r) for r in (args.recipe or DEFAULT_RECIPES)]
    args.paper_recipe = recipe_path(args.paper_recipe)
    return args


class Report:
    def __init__(self, args):
        self.args = args
        self.out = sys.stderr if args.json else sys.stdout
        self.errors: list[str] = []

    def log(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, where: str, err: BaseException) -> dict:
        msg = f"{type(err).__name__}: {err}"
        self.errors.append(f"{where}: {msg}")
        self.log(f"  ERROR in {where}: {msg}")
        self.log("    " + "".join(traceback.format_exception(err)).strip().replace("\n", "\n    "))
        return {"error": msg[:2000]}


def main(argv=None) -> int:
    args = parse_args(argv)
    stdout = sys.stdout
    if args.json:  # stdout holds the JSON line only: whatever a library prints on stdout goes to stderr
        sys.stdout = sys.stderr
    rep = Report(args)
    started = time.perf_counter()
    monitor = bu.CpuMonitor()
    device = args.device
    cuda = device == "cuda"
    context = {"device": bu.device_info(device), "versions": bu.versions(), "git_sha": bu.git_sha(),
               "date": bu.today(), "quick": args.quick}
    result = {"device": context["device"], "versions": context["versions"], "git_sha": context["git_sha"],
              "date": context["date"], "quick": args.quick, "engine_vs_bare": {}, "fastest_vs_bare": {}, "loader_vs_step": {},
              "kernels": {}, "paper_step": {}, "load_average": {"start": _loadavg()}}

    def checkpoint():
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(_jsonable(result), indent=2))

    rep.log(f"IIAE throughput — {context['device']['name']} — torch {context['versions']['torch']}, "
            f"git {context['git_sha']}, {context['date']}{' (quick)' if args.quick else ''}")

    # Sections run in the order --sections names them (engine and loader together, at the first of the two):
    # a GPU check with a tight time limit puts the sections only a GPU can measure first.
    blocks, seen = [], set()
    for s in args.sections:
        block = "engine+loader" if s in ("engine", "fast", "loader") else s
        if block not in seen:
            seen.add(block)
            blocks.append(block)
    for block in blocks:
        if block == "engine+loader":
            _engine_and_loader(args, device, result, rep, checkpoint)
        elif block == "kernels":
            rep.log("\n[kernels] ...")
            if not (cuda or args.gpu_sections_anyway):
                result["kernels"] = {"skipped": NO_CUDA}
                rep.log("  skipped: no CUDA")
            else:
                try:
                    import bench_kernels

                    result["kernels"] = bench_kernels.run(device, quick=args.quick, peak_override=args.peak_gbs,
                                                          budget_s=args.kernel_budget_s, log=rep.log)
                except Exception as err:
                    result["kernels"] = rep.error("kernels", err)
        elif block == "paper":
            rep.log("\n[paper-scale step] ...")
            if not (cuda or args.gpu_sections_anyway):
                result["paper_step"] = {"skipped": NO_CUDA}
                rep.log("  skipped: no CUDA")
            else:
                try:
                    import bench_paper

                    result["paper_step"] = bench_paper.run(args.paper_recipe, device, quick=args.quick,
                                                           timeout_s=args.paper_timeout_s, log=rep.log)
                    for v in bench_paper.VARIANTS:
                        if "error" in result["paper_step"].get(v, {}):
                            rep.errors.append(f"paper_step/{v}: {result['paper_step'][v]['error'][:200]}")
                except Exception as err:
                    result["paper_step"] = rep.error("paper_step", err)
        checkpoint()

    result["load_average"]["end"] = _loadavg()
    result["other_work"] = monitor.others()
    result["elapsed_s"] = time.perf_counter() - started
    result["errors"] = rep.errors
    rep.log("\n" + summary(result))
    rep.log(f"\n{result['elapsed_s']:.0f} s in all; 1-min load average {result['load_average']['start']} at the "
            f"start, {result['load_average']['end']} at the end ({context['device']['cores']} cores).")
    other = result["other_work"]
    if other:
        rep.log(f"other work on the machine during the run: {other['other_cores']} cores on average "
                f"(this run: {other['own_cores']}; hypervisor steal: {other['steal_cores']}).")
        if device == "cpu" and other["other_cores"] + other["steal_cores"] > 0.1:
            rep.log("warning: the machine was not idle; the CPU figures (above all the small `debug` model's, "
                    "whose OpenMP threads stall when preempted) are unreliable. Re-run on an idle machine.")
    _save(args, context, result, rep)
    if args.plot:
        for path in plots(result, Path(args.plot)):
            rep.log(f"plot: {path}")
    checkpoint()
    if args.json:
        print(json.dumps(_jsonable(result)), file=stdout, flush=True)
    sys.stdout = stdout
    if rep.errors:
        rep.log(f"{len(rep.errors)} section(s) failed: " + "; ".join(e[:160] for e in rep.errors))
        return 1
    return 0


def _loadavg():
    """1-minute load average: other work on the machine while the figures were taken (None off Unix)."""
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _engine_and_loader(args, device: str, result: dict, rep: Report, checkpoint) -> None:
    """Per recipe: engine vs bare, its fast settings vs bare fp32, then loader vs step (which reuses the engine
    built for the first)."""
    from bench_data import DataSource

    source = DataSource(args.data, args.quick, log=rep.log)
    try:
        for path in args.recipes:
            name = Path(path).stem
            engine = None
            rep.log(f"\n[engine vs bare] {name} ...")
            try:
                from bench_step import engine_vs_bare

                watch = bu.CpuMonitor()
                figures, engine = engine_vs_bare(path, device, quick=args.quick, block_s=args.block_s)
                figures["other_cores"] = (watch.others() or {}).get("other_cores")
                result["engine_vs_bare"][name] = figures
                rep.log(f"  engine {figures['engine_samples_per_s']:.1f} samples/s, bare "
                        f"{figures['bare_samples_per_s']:.1f} samples/s, ratio {figures['ratio']:.3f}")
            except Exception as err:
                result["engine_vs_bare"][name] = rep.error(f"engine_vs_bare/{name}", err)
            if "fast" in args.sections:
                rep.log(f"[fastest vs bare fp32] {name} ...")
                try:
                    from bench_step import fastest_vs_bare

                    watch = bu.CpuMonitor()
                    figures = fastest_vs_bare(path, device, quick=args.quick, block_s=args.block_s, log=rep.log)
                    figures["other_cores"] = (watch.others() or {}).get("other_cores")
                    result["fastest_vs_bare"][name] = figures
                except Exception as err:
                    result["fastest_vs_bare"][name] = rep.error(f"fastest_vs_bare/{name}", err)
                checkpoint()
            if "loader" in args.sections:
                rep.log(f"[loader vs step] {name} ...")
                if engine is None:
                    result["loader_vs_step"][name] = {"error": "the engine section failed for this recipe"}
                else:
                    try:
                        from bench_data import loader_vs_step

                        watch = bu.CpuMonitor()
                        figures = loader_vs_step(engine, path, source, quick=args.quick, block_s=args.block_s)
                        figures["other_cores"] = (watch.others() or {}).get("other_cores")
                        result["loader_vs_step"][name] = figures
                        rep.log(f"  loader {figures['loader_samples_per_s']:.0f} samples/s vs step "
                                f"{figures['step_samples_per_s']:.1f} → ratio {figures['ratio']:.2f}; fed/memory "
                                f"{figures['fed_vs_memory']:.3f}")
                    except Exception as err:
                        result["loader_vs_step"][name] = rep.error(f"loader_vs_step/{name}", err)
            if "engine" not in args.sections:
                result["engine_vs_bare"].pop(name, None)
            del engine
            checkpoint()
        if args.profile:
            _profiles(args, device, source, rep)
    finally:
        source.close()


def _jsonable(obj):
    """Strict JSON: NaN/inf become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---- text summary -----------------------------------------------------------------------------------------
def _ok(d: dict) -> bool:
    return isinstance(d, dict) and bool(d) and "error" not in d and "skipped" not in d


def summary(result: dict) -> str:
    parts = []
    ev = [(n, d) for n, d in result["engine_vs_bare"].items()]
    if ev:
        rows = [[n, d.get("parameters"), d.get("batch_size"), d.get("engine_samples_per_s"),
                 d.get("bare_samples_per_s"), d.get("ratio"), "≥ 0.97", d.get("meets_target"), d.get("other_cores")]
                if _ok(d) else [n, "error", "", "", "", "", "", "", ""] for n, d in ev]
        parts.append("Engine train step vs bare PyTorch loop (same model, same in-memory batch; medians of "
                     "interleaved blocks)\n" + bu.table(
                         ["recipe", "params", "batch", "engine samples/s", "bare samples/s", "ratio", "target",
                          "met", "other load"], rows))
    fv = result["fastest_vs_bare"]
    if fv:
        rows = []
        for n, d in fv.items():
            if not _ok(d):
                rows.append([n, "error", "", "", "", "", ""])
                continue
            for v, m in d["variants"].items():
                rows.append([n, v + (" *" if v == d["fastest"] else ""), m["engine_ms_per_step"],
                             m["bare_ms_per_step"], m["ratio"], m["warmup_s"], d.get("other_cores")])
        lines = [f"{n}: fastest {d['fastest']} {d['ratio']:.2f}× (target ≥ {d['target']}: "
                 f"{'met' if d['meets_target'] else 'NOT met'})" for n, d in fv.items() if _ok(d)]
        parts.append("Engine at fast settings vs bare fp32 eager loop (same model, batch and data; each variant "
                      "interleaved with the bare loop; * fastest)\n" + bu.table(
                          ["recipe", "variant", "engine ms", "bare fp32 ms", "ratio", "warm-up s", "other load"], rows)
                      + "\n" + "\n".join(lines))
    lv = list(result["loader_vs_step"].items())
    if lv:
        rows = [[n, "synthetic" if d.get("synthetic") else "real", d.get("num_workers"),
                 d.get("loader_samples_per_s"), d.get("step_samples_per_s"), d.get("ratio"), "≥ 5",
                 d.get("meets_target"), d.get("fed_vs_memory"), d.get("other_cores")] if _ok(d)
                else [n, "error", "", "", "", "", "", "", "", ""] for n, d in lv]
        parts.append("Streaming loader vs train step (loader alone, decode + batch from shards)\n" + bu.table(
            ["recipe", "shards", "workers", "loader samples/s", "step samples/s", "ratio", "target", "met",
             "fed/memory step", "other load"], rows))
    k = result["kernels"]
    if k:
        if not _ok(k):
            parts.append("Kernels: " + (f"skipped: {k['skipped']}" if "skipped" in k else f"error: {k.get('error')}"))
        else:
            rows = []
            for kernel, shapes in k["results"].items():
                for label, modes in shapes.items():
                    if not _ok(modes):
                        rows.append([kernel, label, "", modes.get("error") or modes.get("skipped"), *[""] * 6])
                        continue
                    for mode in ("fwd", "bwd", "full"):
                        m = modes[mode]
                        rows.append([kernel, label, mode, m["fused_ms"] * 1e3, m["eager_ms"] * 1e3,
                                     m["compile_ms"] * 1e3, m["vs_eager"], m["vs_compile"], m["fused_gbs"],
                                     m["pct_of_peak"]])
            head = (f"Kernels ({k['backend']} vs eager reference vs torch.compile(reference), {k['dtype']}; peak "
                    f"{bu.fmt(k['peak_gbs'])} GB/s from {k['peak_source']}, device copy {bu.fmt(k['copy_gbs'])} GB/s; "
                    f"one launch of the smallest kernel {bu.fmt(k.get('launch_ms', float('nan')) * 1e3)} µs)")
            parts.append(head + "\n" + bu.table(["kernel", "shape", "mode", "fused µs", "eager µs", "compile µs",
                                                 "× eager", "× compile", "fused GB/s", "% peak"], rows))
            t = k.get("targets", {})
            parts.append("Kernel targets: " + "; ".join(
                f"{name} {bu.fmt(v.get('value'))} (≥ {v['target']}: {bu.fmt(v.get('meets_target'))})"
                for name, v in t.items()))
    p = result["paper_step"]
    if p:
        if "skipped" in p:
            parts.append(f"Paper-scale step: skipped: {p['skipped']}")
        elif "error" in p:
            parts.append(f"Paper-scale step: error: {p['error']}")
        else:
            rows = []
            for v in ("fp32_eager", "bf16_fused_compile"):
                d = p.get(v, {})
                rows.append([v, d.get("kernels_backend"), d.get("img_per_s"), d.get("ms_per_step"), d.get("warmup_s")]
                            if "error" not in d else [v, "error", "", "", d["error"][:60] + "…"])
            parts.append(f"Paper-scale train step ({Path(p['recipe']).stem}, batch 8)\n" + bu.table(
                ["variant", "kernels", "img/s", "ms/step", "warm-up s"], rows)
                + f"\nspeed-up {bu.fmt(p.get('speedup'))} (target ≥ 2: {bu.fmt(p.get('meets_target'))})")
    return "\n\n".join(parts)


# ---- CSV ----------------------------------------------------------------------------------------------------
def _save(args, context: dict, result: dict, rep: Report) -> None:
    if args.no_save or (args.quick and not args.results):
        return
    folder = Path(args.results) if args.results else bu.RESULTS
    base = bu.context_row(context)
    f = bu.CONTEXT_FIELDS
    ev_fields = ["recipe", "engine_samples_per_s", "bare_samples_per_s", "ratio", "engine_ms_per_step",
                 "bare_ms_per_step", "batch_size", "parameters", "iters_per_block", "rounds", "other_cores"]
    lv_fields = ["recipe", "synthetic", "num_workers", "loader_samples_per_s", "step_samples_per_s", "ratio",
                 "first_batch_s", "fed_step_samples_per_s", "memory_step_samples_per_s", "fed_vs_memory",
                 "other_cores"]
    fv_fields = ["recipe", "variant", "overrides", "engine_ms_per_step", "bare_ms_per_step", "ratio", "warmup_s",
                 "fastest", "other_cores"]
    fv_rows = [{**base, "recipe": n, "variant": v, **m, "overrides": " ".join(m["overrides"]),
                "fastest": v == d["fastest"], "other_cores": d.get("other_cores")}
               for n, d in result["fastest_vs_bare"].items() if _ok(d) for v, m in d["variants"].items()]
    written = [
        bu.append_rows(folder, "fastest_vs_bare", f + fv_fields, fv_rows),
        bu.append_rows(folder, "engine_vs_bare", f + ev_fields,
                       [{**base, **d} for d in result["engine_vs_bare"].values() if _ok(d)]),
        bu.append_rows(folder, "loader_vs_step", f + lv_fields,
                       [{**base, **d} for d in result["loader_vs_step"].values() if _ok(d)]),
    ]
    if _ok(result["kernels"]):
        import bench_kernels

        written.append(bu.append_rows(folder, "kernels", f + bench_kernels.CSV_FIELDS,
                                      [{**base, **r} for r in bench_kernels.rows_for_csv(result["kernels"])]))
    p = result["paper_step"]
    if _ok(p):
        rows = [{**base, "recipe": Path(p["recipe"]).stem, **p[v], "speedup": p.get("speedup")}
                for v in ("fp32_eager", "bf16_fused_compile") if _ok(p.get(v, {}))]
        written.append(bu.append_rows(folder, "paper_step", f + ["recipe", "variant", "kernels_backend",
                                                                 "mixed_precision", "compile", "img_per_s",
                                                                 "ms_per_step", "warmup_s", "speedup"], rows))
    for path in filter(None, written):
        rep.log(f"appended: {path}")


# ---- plots --------------------------------------------------------------------------------------------------
def plots(result: dict, folder: Path) -> list[Path]:
    out = []
    title = f"{result['device']['name']}\ngit {result['git_sha']}, {result['date']}"
    ev = {n: d for n, d in result["engine_vs_bare"].items() if _ok(d)}
    if ev:
        out.append(bu.bar_chart(folder / "engine_vs_bare.png", f"Engine step vs bare loop\n{title}", list(ev),
                                {"engine": [d["engine_samples_per_s"] for d in ev.values()],
                                 "bare": [d["bare_samples_per_s"] for d in ev.values()]},
                                "samples/s", notes=[f"ratio {d['ratio']:.3f}" for d in ev.values()]))
    fv = {n: d for n, d in result["fastest_vs_bare"].items() if _ok(d)}
    if fv:
        variants = sorted({v for d in fv.values() for v in d["variants"]})
        out.append(bu.bar_chart(folder / "fastest_vs_bare.png", f"Engine at fast settings ÷ bare fp32 eager\n{title}",
                                list(fv), {v: [d["variants"].get(v, {}).get("ratio", float("nan")) for d in fv.values()]
                                           for v in variants}, "× bare fp32 speed", hline=1.0))
    lv = {n: d for n, d in result["loader_vs_step"].items() if _ok(d)}
    if lv:
        out.append(bu.bar_chart(folder / "loader_vs_step.png", f"Streaming loader vs train step\n{title}", list(lv),
                                {"loader": [d["loader_samples_per_s"] for d in lv.values()],
                                 "train step": [d["step_samples_per_s"] for d in lv.values()]},
                                "samples/s", notes=[f"{d['ratio']:.1f}×" for d in lv.values()], log=True))
    k = result["kernels"]
    if _ok(k):
        groups, vs_eager, vs_compile, pct = [], [], [], []
        for kernel, shapes in k["results"].items():
            for label, modes in shapes.items():
                if _ok(modes):
                    short = {"shared_latent_terms": "shared_latent", "reparameterize": "reparam",
                             "gaussian_kl": "kl"}.get(kernel, kernel)
                    groups.append(f"{short} {label.split()[-1]}")
                    vs_eager.append(modes["full"]["vs_eager"])
                    vs_compile.append(modes["full"]["vs_compile"])
                    pct.append(modes["full"]["pct_of_peak"] or float("nan"))
        if groups:
            out.append(bu.bar_chart(folder / "kernels_speedup.png", f"Fused kernels, fwd+bwd: speed-up\n{title}",
                                    groups, {"vs eager": vs_eager, "vs torch.compile": vs_compile}, "× faster",
                                    log=True, hline=1.0))
            out.append(bu.bar_chart(folder / "kernels_bandwidth.png",
                                    f"Fused kernels, fwd+bwd: % of peak bandwidth ({bu.fmt(k['peak_gbs'])} GB/s)"
                                    f"\n{title}", groups, {"% of peak": pct}, "%", hline=80.0))
    p = result["paper_step"]
    if _ok(p) and all(_ok(p.get(v, {})) for v in ("fp32_eager", "bf16_fused_compile")):
        out.append(bu.bar_chart(folder / "paper_step.png", f"Paper-scale train step (256 px, batch 8)\n{title}",
                                ["fp32 eager", "bf16 + fused + compile"],
                                {"img/s": [p["fp32_eager"]["img_per_s"], p["bf16_fused_compile"]["img_per_s"]]},
                                "image pairs/s", notes=["", f"{p['speedup']:.2f}×"]))
    return out


def _profiles(args, device: str, source, rep: Report) -> None:
    from bench_data import profile_loader
    from bench_step import profile_steps

    folder = Path(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    for path in args.recipes:
        name = Path(path).stem
        try:
            (folder / f"step_{name}.txt").write_text(profile_steps(path, device, steps=3 if args.quick else 20))
            (folder / f"loader_{name}.txt").write_text(profile_loader(path, source, 10 if args.quick else 100))
            rep.log(f"profiles: {folder}/step_{name}.txt, loader_{name}.txt")
        except Exception as err:
            rep.error(f"profile/{name}", err)


if __name__ == "__main__":
    sys.exit(main())
