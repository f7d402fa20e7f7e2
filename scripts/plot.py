#!/usr/bin/python3
"""Loss curves of nsa training runs, from their log.jsonl, to a PNG.

    scripts/plot.py RUN_DIR|LOG.jsonl [more ...] [--out FILE.png] [--smooth 0.9]

One run: training loss per step (light), its exponential moving average, and validation
loss at each evaluation, in nats/token on the left axis and bits/byte on the right.
Several runs: overlaid, one colour each. Default output: <first run dir>/loss.png.
"""
import argparse
import json
import math
import os
import sys


def read_log(path):
    steps, losses, evals = [], [], []
    with open(path) as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the last line of a live run, still being written
                break
            sys.exit(f"plot.py: error: {path}:{n} is not JSON")
        if r.get("type") == "step" and r.get("loss") is not None and not r.get("skipped"):
            steps.append(r["step"])
            losses.append(r["loss"])
        elif r.get("type") == "eval" and r.get("val_loss") is not None:
            evals.append((r["step"], r["val_loss"]))
    return steps, losses, evals


def ema(xs, beta):
    """Exponential moving average, debiased (as TensorBoard's smoothing): the early steps
    are not pulled toward zero or held at the first value."""
    out, m = [], 0.0
    for i, x in enumerate(xs):
        m = beta * m + (1 - beta) * x
        out.append(m / (1 - beta ** (i + 1)))
    return out


def main():
    ap = argparse.ArgumentParser(description="Plot nsa training loss curves to PNG.")
    ap.add_argument("runs", nargs="+", help="run directories or log.jsonl files")
    ap.add_argument("--out", help="output PNG (default: <first run>/loss.png)")
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA factor for the training loss")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: error: matplotlib is missing: apt-get install python3-matplotlib "
                 "(or scripts/install-deps.sh --python)")
    logs = []
    for r in a.runs:
        path = os.path.join(r, "log.jsonl") if os.path.isdir(r) else r
        if not os.path.isfile(path):
            sys.exit(f"plot.py: error: {path} does not exist")
        logs.append(path)
    out = a.out or os.path.join(os.path.dirname(logs[0]) or ".", "loss.png")

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lo, hi = math.inf, -math.inf
    for i, path in enumerate(logs):
        steps, losses, evals = read_log(path)
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        c = colours[i % len(colours)]
        if steps:
            ax.plot(steps, losses, color=c, alpha=0.25, linewidth=0.8)
            ax.plot(steps, ema(losses, a.smooth), color=c, linewidth=1.6, label=f"{name} train (EMA {a.smooth})")
            tail = losses[len(losses) // 10:]
            lo, hi = min(lo, min(tail)), max(hi, max(tail))
        if evals:
            es, ev = zip(*evals)
            ax.plot(es, ev, "o--", color=c, markersize=4, label=f"{name} val")
            lo, hi = min(lo, min(ev)), max(hi, max(ev))
        if not steps and not evals:
            print(f"plot.py: warning: {path} has no step or eval records", file=sys.stderr)
    if lo < hi:  # skip the first tenth (ln V at init) so the interesting part fills the plot
        pad = 0.05 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    sec = ax.secondary_yaxis("right", functions=(lambda x: x / math.log(2), lambda x: x * math.log(2)))
    sec.set_ylabel("bits/byte (byte tokenizer)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("nsa training loss")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
