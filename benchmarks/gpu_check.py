"""Every GPU check of the project in one call, within a time budget, for a lent GPU machine (15 minutes, no
network, torch + typer + rich + pyyaml + pandas + scipy + matplotlib + pytest only):

    python benchmarks/gpu_check.py OUTDIR            # on the GPU machine: ~9 minutes
    python benchmarks/gpu_check.py OUTDIR --tiny     # a dry run on a CPU with tiny sizes (tests/test_bench.py)

Steps, most important first; each gets what is left of the budget, and a step that runs out is cut and said so:
1. the CUDA tests (``pytest -m cuda``): training, no host sync in a step, seed groups, fp16 fallback;
2. 16 seeds of the ``lecture`` preset as one stacked model against one run (wall time);
3. the ``full`` preset on nanoGPT's recipe against nanoGPT's recipe compiled as it ships: ms/step, time to val
   <= 1.47, MFU against the measured bf16 peak;
4. one full-scale grid with 3 seeds (``gptlab ablate qk --scale full --seeds 3``): its report lands in
   OUTDIR/reports/qk-full/.
OUTDIR gets one log per step and summary.md (step, exit code, seconds, the tables).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 540  # 9 minutes of the machine's 15


def steps(out: Path, tiny: bool) -> list[tuple[str, list[str], int]]:
    """(name, command, its own time limit in seconds) for each step."""
    py = sys.executable
    device = "cpu" if tiny else "cuda"
    bench = [py, "benchmarks/bench.py", "--device", device]
    tiny_grid = ["--set", "train.max_iters=4", "--set", "train.eval_interval=2", "--set", "train.eval_windows=4",
                 "--set", "model.n_layer=1", "--set", "model.n_embd=48", "--set", "model.block_size=16",
                 "--set", "train.batch_size=4"] if tiny else []
    return [
        ("cuda tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"], 120),
        ("16 seeds as one group vs one run",
         bench + ["--preset", "--group", "2" if tiny else "16", "--max-iters", "20" if tiny else "1000"]
         + (["--quick"] if tiny else []), 150),
        ("full preset vs nanoGPT (compiled)",
         bench + (["--preset", "lecture", "--quick", "--max-iters", "20"] if tiny else
                  ["--preset", "full", "--max-iters", "2500"]), 240),
        ("full-scale grid: qk, 3 seeds",
         [py, "-m", "gptlab.cli", "ablate", "qk", "--scale", "full", "--seeds", "3", "--device", device,
          "--out", str(out / "reports")] + tiny_grid, 300),
    ]


def machine() -> str:
    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPU cores"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name()} (compute capability "
                     f"{'.'.join(map(str, torch.cuda.get_device_capability()))}), "
                     f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    else:
        lines.append("no CUDA device")
    return "\n".join(f"- {line}" for line in lines)


def run(out: Path, tiny: bool, budget: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary = ["# GPU check" + (" (tiny dry run on a CPU: not a measurement)" if tiny else ""), "", machine(), "",
               "| step | exit | seconds | log |", "| --- | --- | --- | --- |"]
    logs = []
    failed = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    for n, (name, command, limit) in enumerate(steps(out, tiny), start=1):
        left = budget - (time.monotonic() - start)
        log = out / f"{n}-{name.split(':')[0].replace(' ', '-')}.txt"
        if left < 20:
            summary.append(f"| {name} | not run (budget spent) | 0 | |")
            failed += 1
            continue
        began = time.monotonic()
        with open(log, "w") as f:
            f.write("$ " + " ".join(command) + "\n")
            f.flush()
            try:
                code = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                      timeout=min(limit, left)).returncode
            except subprocess.TimeoutExpired:
                code = "cut (time limit)"  # type: ignore[assignment]
        seconds = time.monotonic() - began
        failed += code != 0
        summary.append(f"| {name} | {code} | {seconds:.0f} | {log.name} |")
        logs.append((name, log))
    summary += ["", f"Total: {time.monotonic() - start:.0f} s of a {budget:.0f} s budget.", ""]
    for name, log in logs:
        summary += [f"## {name}", "", "```text", log.read_text()[-6000:].rstrip(), "```", ""]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary[: 8 + len(logs)]))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the logs, summary.md and reports go")
    parser.add_argument("--tiny", action="store_true", help="a dry run on a CPU with tiny sizes")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps together")
    args = parser.parse_args(argv)
    return run(args.out, args.tiny, args.budget)


if __name__ == "__main__":
    sys.exit(main())
