#!/usr/bin/env python3
"""Token-cost and context-window benchmark of claude-agent-http against fake-anthropic.

Measures what prompt caching and compaction do for a user, with the fake's
cache simulation and context window (no timing is measured, so a debug build
gives the same figures):

1. A 20-step tool loop, as the second turn of a session and with caching on
   and off: the share of input tokens read from the cache, and the billed
   input cost of the loop relative to the same loop without caching.
2. A 300-turn session whose every turn runs a tool that prints ~2,000 tokens,
   under a 50,000-token window (the fake refuses anything larger): failed
   turns, requests over the window, compactions.

Writes its section of bench/RESULTS.md (between marker comments) and the raw
figures to bench/results/context.json. Stdlib only; builds the binaries with
cargo unless BENCH_SKIP_BUILD=1 (then CARGO_TARGET_DIR/debug is used).

Settings (environment): BENCH_TURNS (300), BENCH_STEPS (20), BENCH_WINDOW
(50000), BENCH_OUTPUT_TOKENS (2000), BENCH_RESULTS_MD, BENCH_RESULTS_DIR.
"""

import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "debug")
TURNS = int(os.environ.get("BENCH_TURNS", "300"))
STEPS = int(os.environ.get("BENCH_STEPS", "20"))
WINDOW = int(os.environ.get("BENCH_WINDOW", "50000"))
OUTPUT_TOKENS = int(os.environ.get("BENCH_OUTPUT_TOKENS", "2000"))
RESULTS_MD = os.environ.get("BENCH_RESULTS_MD", os.path.join(ROOT, "bench", "RESULTS.md"))
RESULTS_DIR = os.environ.get("BENCH_RESULTS_DIR", os.path.join(ROOT, "bench", "results"))
MODEL = "claude-sonnet-4-6"
# Sonnet's prices per million tokens (input, cache write 5m, cache read).
PRICE_IN, PRICE_WRITE, PRICE_READ = 3.0, 3.75, 0.30
# Compaction calls carry this phrase; the turn's scripted replies pass them over.
SUMMARY_MARK = "being compacted"
BEGIN = "<!-- BEGIN bench/context.py: generated, replaced on every run -->"
END = "<!-- END bench/context.py -->"


def log(message):
    print(f"[context-bench] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_until_up(url, process, what):
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise SystemExit(f"{what} did not come up at {url}")


class Stack:
    """fake-anthropic and the service, on free ports, in a scratch directory."""

    def __init__(self, work, name, caching, window):
        self.fake_port, self.port = free_port(), free_port()
        self.fake_url = f"http://127.0.0.1:{self.fake_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        base = os.path.join(work, name)
        os.makedirs(base)
        fake_args = [os.path.join(BIN, "fake-anthropic"), "--port", str(self.fake_port)]
        if window:
            fake_args += ["--context-window", str(window)]
        self.fake = subprocess.Popen(fake_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(self.fake_url + "/health", self.fake, "fake-anthropic")
        models = ""
        if window:
            models = f"models:\n  {MODEL}: {{context_window: {window}, max_output_tokens: 8000}}\n"
        config = os.path.join(base, "config.yaml")
        with open(config, "w") as f:
            f.write(
                f"user: {{base_dir: {base}/users}}\n"
                f"session: {{storage: sqlite, sqlite_path: {base}/sessions.db}}\n"
                f"api: {{host: 127.0.0.1, port: {self.port}}}\n"
                f"anthropic: {{base_url: '{self.fake_url}', api_key: bench, prompt_caching: {str(caching).lower()}}}\n"
                f"defaults: {{model: {MODEL}, max_turns: 100}}\n" + models
            )
        self.log = open(os.path.join(base, "service.log"), "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_AGENT_"))}
        self.service = subprocess.Popen(
            [os.path.join(BIN, "claude-agent-http"), "--config", config],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=base,
        )
        wait_until_up(self.url + "/health", self.service, "claude-agent-http")
        self.users = os.path.join(base, "users")

    def session(self, user):
        status, body = call("POST", self.url + "/api/v1/sessions", {"user_id": user})
        assert status == 201, body
        return body["session_id"]

    def push(self, replies):
        status, body = call("POST", self.fake_url + "/_fake/replies", replies)
        assert status == 200, body

    def chat(self, session, message):
        return call("POST", self.url + "/api/v1/chat", {"session_id": session, "message": message, "timeout": 600})

    def requests(self):
        return call("GET", self.fake_url + "/_fake/requests")[1]

    def forget_requests(self):
        # Clears the queue, the record and the cache; the CLI settings stay.
        call("POST", self.fake_url + "/_fake/reset")

    def stop(self):
        for process in (self.service, self.fake):
            process.terminate()
        for process in (self.service, self.fake):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


def unless_summary(reply):
    return {"kind": "unless", "contains": SUMMARY_MARK, "reply": reply}


def tool(command):
    return {"kind": "tool_use", "calls": [{"name": "Bash", "input": {"command": command}}]}


def input_split(usage):
    return (
        usage.get("input_tokens", 0),
        usage.get("cache_creation_input_tokens", 0),
        usage.get("cache_read_input_tokens", 0),
    )


def tool_loop(work, caching):
    """A warm-up turn, then one turn of STEPS tool calls; usage of that turn's calls."""
    stack = Stack(work, f"loop-{'cached' if caching else 'uncached'}", caching, None)
    try:
        session = stack.session("bench")
        # The first turn reads a ~3,000-token design note, as a session's
        # first turn usually reads something before the work starts.
        with open(os.path.join(stack.users, "bench", "notes.md"), "w") as f:
            f.write("The service keeps one working directory per user and a session store.\n" * 170)
        stack.push([tool("cat notes.md"), {"kind": "text", "text": "I have read the notes."}])
        status, body = stack.chat(session, "Read notes.md; we will then look at the project's files.")
        assert status == 200, body
        # The warm-up's entries stay in the fake's cache, as they would upstream.
        before = len(stack.requests())
        outputs = os.path.join(stack.users, "bench")
        for step in range(STEPS):
            # Command outputs of 100 to 600 tokens, as listings and greps give.
            with open(os.path.join(outputs, f"part{step}.txt"), "w") as f:
                f.write(f"line {step} of the listing\n" * (20 + 17 * (step % 7)))
        stack.push([tool(f"cat part{step}.txt") for step in range(STEPS)] + [{"kind": "text", "text": "Done."}])
        status, body = stack.chat(session, f"Read part0.txt to part{STEPS - 1}.txt one by one.")
        assert status == 200, body
        calls = [r["usage"] for r in stack.requests()[before:] if r.get("usage")]
        return {"calls": len(calls), "usage": body["usage"], "per_call": [input_split(u) for u in calls]}
    finally:
        stack.stop()


def long_session(work):
    stack = Stack(work, "long-session", True, WINDOW)
    try:
        session = stack.session("bench")
        with open(os.path.join(stack.users, "bench", "out.txt"), "w") as f:
            line = "output of a build step with a file name and a message\n"
            f.write(line * (OUTPUT_TOKENS * 4 // len(line)))
        failed, compactions, calls, over, biggest = [], {}, 0, 0, 0
        started = time.monotonic()
        for turn in range(TURNS):
            stack.push([
                unless_summary(tool("cat out.txt")),
                unless_summary({"kind": "text", "text": f"Turn {turn} done."}),
            ])
            status, body = stack.chat(session, f"Turn {turn}: build again and show me the output.")
            if status != 200 or body.get("text") != f"Turn {turn} done.":
                failed.append((turn, status, body.get("code") or body.get("text")))
            else:
                for compaction in body["compactions"]:
                    compactions[compaction["trigger"]] = compactions.get(compaction["trigger"], 0) + 1
            for request in stack.requests():
                calls += 1
                if request["status"] != 200:
                    over += 1
                if request.get("usage"):
                    biggest = max(biggest, sum(input_split(request["usage"])))
            stack.forget_requests()
            if turn % 50 == 49:
                log(f"{turn + 1} turns, {len(failed)} failed, compactions {compactions}")
        status, messages = call("GET", f"{stack.url}/api/v1/sessions/{session}/messages")
        stored = len(messages) if status == 200 else None
        return {
            "turns": TURNS, "failed": failed, "model_calls": calls, "rejected_calls": over,
            "largest_prompt_tokens": biggest, "compactions": compactions,
            "stored_messages": stored, "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        stack.stop()


def billed(split):
    fresh, written, read = split
    return fresh * PRICE_IN + written * PRICE_WRITE + read * PRICE_READ


def report(cached, uncached, session):
    totals = [sum(x) for x in zip(*cached["per_call"])]
    total_in = sum(totals)
    share = totals[2] / total_in if total_in else 0.0
    uncached_in = sum(sum(split) for split in uncached["per_call"])
    ratio = billed(totals) / (uncached_in * PRICE_IN) if uncached_in else 0.0
    machine = f"{os.cpu_count()} CPUs, Linux {platform.release()}"
    revision = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "unknown"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Token cost and context window",
        "",
        "| | |", "|---|---|",
        f"| date | {date} |", f"| revision | {revision} |", f"| machine | {machine} |",
        "| command | `python3 bench/context.py` |",
        f"| settings | model {MODEL} at ${PRICE_IN}/${PRICE_WRITE}/${PRICE_READ} per MTok (input / 5-minute cache write / cache read); "
        "fake-anthropic's cache simulation (minimum cacheable prefix 2048 tokens for this model, 20-block lookback) |",
        "",
        f"### 1. A {STEPS}-step tool loop (second turn of a session whose first turn read a ~3,000-token file; outputs of 100 to 600 tokens)",
        "",
        "| figure | value | aim |", "|---|---:|---:|",
        f"| model calls | {cached['calls']} | |",
        f"| input tokens: fresh / cache write / cache read | {totals[0]} / {totals[1]} / {totals[2]} | |",
        f"| **share of input tokens read from the cache** | **{share:.3f}** | ≥ 0.9 |",
        f"| input tokens of the same loop without caching | {uncached_in} | |",
        f"| **billed input cost relative to no caching** | **{ratio:.3f}** | ≤ 0.15 |",
        "",
        f"### 2. {session['turns']} turns, each running a tool that prints ~{OUTPUT_TOKENS} tokens, under a {WINDOW}-token window",
        "",
        "| figure | value |", "|---|---:|",
        f"| failed turns | {len(session['failed'])} |",
        f"| model calls (turn steps and summaries) | {session['model_calls']} |",
        f"| calls the fake refused (prompt over the window or otherwise) | {session['rejected_calls']} |",
        f"| largest prompt sent, tokens (input + cache) | {session['largest_prompt_tokens']} |",
        f"| compactions by trigger | {', '.join(f'{k}: {v}' for k, v in sorted(session['compactions'].items())) or 'none'} |",
        f"| messages kept in the store | {session['stored_messages']} |",
        f"| run time, debug build | {session['seconds']} s |",
        END,
    ]
    section = "\n".join(lines) + "\n"
    text = open(RESULTS_MD).read() if os.path.exists(RESULTS_MD) else "# Results\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", lambda _m: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RESULTS_MD, "w") as f:
        f.write(text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "context.json"), "w") as f:
        json.dump({"date": date, "revision": revision, "tool_loop": {"cached": cached, "uncached": uncached,
                   "cache_read_share": share, "billed_input_ratio": ratio}, "long_session": session}, f, indent=2)
    print(section)


def main():
    if os.environ.get("BENCH_SKIP_BUILD") != "1":
        log("building claude-agent-http and fake-anthropic (debug)")
        subprocess.run(["cargo", "build", "-q", "-p", "claude-agent-http", "-p", "fake-anthropic"],
                       cwd=ROOT, check=True)
    # Not under /tmp: the service warns that commands could reach it there.
    os.makedirs(TARGET, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="context-bench-", dir=TARGET) as work:
        log(f"{STEPS}-step tool loop, caching on and off")
        cached = tool_loop(work, True)
        uncached = tool_loop(work, False)
        log(f"{TURNS} turns under a {WINDOW}-token window")
        session = long_session(work)
    report(cached, uncached, session)
    if session["failed"] or session["rejected_calls"]:
        raise SystemExit(f"failed turns: {session['failed'][:5]}")


if __name__ == "__main__":
    main()
