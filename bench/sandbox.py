#!/usr/bin/env python3
"""What confinement adds to starting one command: `true` run directly,
through `claude-agent-http sandbox-exec` with the service's user, and as a
user's own id (root only). As root, sandbox-exec also makes the command's
PID namespace. Prints a Markdown table and, with --write, replaces its
section of bench/RESULTS.md.

    python3 bench/sandbox.py [--runs 300] [--exe target/release/claude-agent-http] [--write]
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

BEGIN = "<!-- BEGIN bench/sandbox.py -->"
END = "<!-- END bench/sandbox.py -->"
READ_ONLY = ["/usr", "/bin", "/lib", "/lib64", "/etc", "/proc"]


def times(argv, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--exe", default="target/release/claude-agent-http")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not os.access(args.exe, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "claude-agent-http"], check=True)
    work = tempfile.mkdtemp(prefix="cah-bench-sandbox-")
    os.chmod(work, 0o755)
    policy = ["--rw", work] + [a for d in READ_ONLY if os.path.isdir(d) for a in ("--ro", d)]
    base = [args.exe, "sandbox-exec"] + policy
    cases = [("`true`, directly", ["/bin/true"]), ("through sandbox-exec, the service's user", base + ["--", "/bin/true"])]
    if os.geteuid() == 0:
        os.chown(work, 3_900_000, 3_900_000)
        cases.append(("through sandbox-exec, a user's own id", base + ["--uid", "3900000", "--gid", "3900000", "--", "/bin/true"]))
    rows = []
    for name, argv in cases:
        times(argv, 20)  # warm-up
        samples = times(argv, args.runs)
        rows.append((name, statistics.median(samples), percentile(samples, 90), percentile(samples, 99)))
    load = os.getloadavg()[0]
    lines = [
        BEGIN,
        "## Starting a confined command",
        "",
        f"Measured by `python3 bench/sandbox.py --runs {args.runs}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} ({os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, {'as root: with a PID namespace per command' if os.geteuid() == 0 else 'not root: no namespaces, no ids'}, "
        f"load average {load:.2f}). Wall time from spawn to exit of `/bin/true`, milliseconds; "
        "the policy is Landlock over a work directory and six system directories.",
        "",
        "| how | p50 | p90 | p99 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {a:.2f} | {b:.2f} | {c:.2f} |" for n, a, b, c in rows]
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        with open(path) as f:
            old = f.read()
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        with open(path, "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
