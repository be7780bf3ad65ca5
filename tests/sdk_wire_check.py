#!/usr/bin/env python3
"""Checks that the official `anthropic` Python SDK accepts what fake-anthropic
sends, and that the fake rejects what the real API rejects.

The SDK is the reference parser of the wire format: if it can read the fake's
messages and streams, so can any client written against the real API.

Usage:
    python3 tests/sdk_wire_check.py [PATH_TO_fake-anthropic_BINARY]

The binary path comes from argv[1], else $FAKE_ANTHROPIC_BIN, else
target/debug/fake-anthropic in the repository. Needs `pip install anthropic`.
Prints "N passed, M failed" and exits non-zero on any failure.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

try:
    import anthropic
except ImportError:
    print("the anthropic SDK is missing: pip install anthropic", file=sys.stderr)
    sys.exit(2)

# Any name works with the fake; a made-up one keeps SDK deprecation warnings out.
MODEL = "claude-fake-1"
BANNER = "fake-anthropic listening on "
START_TIMEOUT_S = 15


def binary_path():
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("FAKE_ANTHROPIC_BIN"):
        return Path(os.environ["FAKE_ANTHROPIC_BIN"])
    return Path(__file__).resolve().parent.parent / "target" / "debug" / "fake-anthropic"


def start_fake(binary):
    """Starts the binary on a free port and returns (process, base_url)."""
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    # readline blocks; a thread lets a wedged binary fail the check instead
    # of hanging it.
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise SystemExit(f"{binary} printed no banner within {START_TIMEOUT_S}s")
    if not line.startswith(BANNER):
        proc.kill()
        raise SystemExit(f"unexpected banner from {binary}: {line!r}")
    return proc, line[len(BANNER):].strip()


class Fake:
    """The fake's HTTP control endpoints, through urllib only."""

    def __init__(self, url):
        self.url = url

    def _call(self, method, path, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def script(self, *replies):
        self._call("POST", "/_fake/replies", list(replies))

    def requests(self):
        return self._call("GET", "/_fake/requests")

    def reset(self):
        self._call("POST", "/_fake/reset", {})


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def user(text):
    return [{"role": "user", "content": text}]


BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


def check_plain_text(client, fake):
    fake.script({"kind": "text", "text": "Hello from the fake"})
    message = client.messages.create(model=MODEL, max_tokens=256, messages=user("hi"))
    expect(isinstance(message, anthropic.types.Message), f"got {type(message)}")
    expect(message.id.startswith("msg_"), message.id)
    expect(message.model == MODEL, message.model)
    expect(len(message.content) == 1, message.content)
    block = message.content[0]
    expect(isinstance(block, anthropic.types.TextBlock), f"got {type(block)}")
    expect(block.text == "Hello from the fake", block.text)
    expect(message.stop_reason == "end_turn", message.stop_reason)
    expect(message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage)
    sent = fake.requests()[-1]
    headers = dict((k.lower(), v) for k, v in sent["headers"])
    # SDK versions differ in which auth header they send; the fake takes both.
    expect(
        headers.get("x-api-key") == "dummy-key"
        or headers.get("authorization") == "Bearer dummy-key",
        headers,
    )
    expect("anthropic-version" in headers, headers)


def check_echo_default(client, fake):
    message = client.messages.create(model=MODEL, max_tokens=256, messages=user("repeat me"))
    expect(message.content[0].text == "Echo: repeat me", message.content[0].text)


def check_tool_use_round_trip(client, fake):
    fake.script(
        {"kind": "tool_use", "text": "Checking.", "calls": [{"name": "Bash", "input": {"command": "pwd"}}]},
        {"kind": "text", "text": "You are in /work."},
    )
    first = client.messages.create(
        model=MODEL, max_tokens=256, tools=[BASH_TOOL], messages=user("where am I?")
    )
    expect(first.stop_reason == "tool_use", first.stop_reason)
    expect(isinstance(first.content[0], anthropic.types.TextBlock), first.content)
    call = first.content[1]
    expect(isinstance(call, anthropic.types.ToolUseBlock), f"got {type(call)}")
    expect(call.name == "Bash" and call.input == {"command": "pwd"}, call)
    expect(call.id.startswith("toolu_"), call.id)
    # The SDK's own serialisation of the answer must pass the fake's checks.
    second = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[BASH_TOOL],
        messages=user("where am I?")
        + [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "/work"}],
            },
        ],
    )
    expect(second.content[0].text == "You are in /work.", second.content)


def check_stream_text(client, fake):
    text = "The quick brown fox jumps over the lazy dog."
    fake.script({"kind": "text", "text": text})
    with client.messages.stream(model=MODEL, max_tokens=256, messages=user("tell me")) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    expect(len(deltas) > 1, f"expected several deltas, got {deltas}")
    expect("".join(deltas) == text, deltas)
    expect(final.content[0].text == text, final.content)
    expect(final.stop_reason == "end_turn", final.stop_reason)
    expect(final.usage.output_tokens > 1, final.usage)


def check_stream_tool_use(client, fake):
    command = {"command": "grep -rn 'TODO' src | head -50", "timeout": 30}
    fake.script(
        {
            "kind": "tool_use",
            "calls": [{"name": "Bash", "input": command}, {"name": "Bash", "input": {"command": "ls"}}],
        }
    )
    partials = 0
    with client.messages.stream(
        model=MODEL, max_tokens=256, tools=[BASH_TOOL], messages=user("find todos")
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partials += 1
        final = stream.get_final_message()
    expect(partials >= 3, f"only {partials} input_json_delta events")
    expect(final.stop_reason == "tool_use", final.stop_reason)
    calls = [b for b in final.content if isinstance(b, anthropic.types.ToolUseBlock)]
    expect(len(calls) == 2, final.content)
    expect(calls[0].input == command, calls[0].input)
    expect(calls[1].input == {"command": "ls"}, calls[1].input)


def check_stream_thinking(client, fake):
    fake.script(
        {"kind": "thinking", "thinking": "The user wants a number.", "text": "42"},
        {"kind": "text", "text": "Still 42."},
    )
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with client.messages.stream(
        model=MODEL, max_tokens=2048, thinking=thinking, messages=user("pick a number")
    ) as stream:
        thoughts = [e.thinking for e in stream if e.type == "thinking"]
        final = stream.get_final_message()
    expect("".join(thoughts) == "The user wants a number.", thoughts)
    block = final.content[0]
    expect(isinstance(block, anthropic.types.ThinkingBlock), f"got {type(block)}")
    expect(block.thinking == "The user wants a number.", block.thinking)
    expect(len(block.signature) > 20, block.signature)
    expect(final.content[1].text == "42", final.content)
    # Sending the thinking block back unchanged is accepted.
    follow_up = client.messages.create(
        model=MODEL,
        max_tokens=2048,
        thinking=thinking,
        messages=user("pick a number")
        + [{"role": "assistant", "content": final.content}]
        + user("again?"),
    )
    expect(follow_up.content[-1].text == "Still 42.", follow_up.content)


def check_invalid_request(client, fake):
    try:
        client.messages.create(
            model=MODEL, max_tokens=256, messages=[{"role": "assistant", "content": "hi"}]
        )
    except anthropic.BadRequestError as error:
        expect(error.status_code == 400, error.status_code)
        expect(error.body["error"]["type"] == "invalid_request_error", error.body)
        expect("first message" in error.body["error"]["message"], error.body)
        return
    raise AssertionError("no BadRequestError")


def check_edited_thinking_rejected(client, fake):
    messages = user("q") + [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "edited", "signature": "not-a-real-signature"},
                {"type": "text", "text": "a"},
            ],
        }
    ] + user("q2")
    try:
        client.messages.create(model=MODEL, max_tokens=256, messages=messages)
    except anthropic.BadRequestError as error:
        expect("signature" in error.body["error"]["message"], error.body)
        return
    raise AssertionError("no BadRequestError")


def check_overloaded(client, fake):
    fake.script(
        {"kind": "error", "status": 529, "error_type": "overloaded_error", "message": "Overloaded", "times": 5}
    )
    no_retries = client.with_options(max_retries=0)
    try:
        no_retries.messages.create(model=MODEL, max_tokens=256, messages=user("hi"))
    except anthropic.APIStatusError as error:
        expect(error.status_code == 529, error.status_code)
        expect(isinstance(error, anthropic.InternalServerError), type(error))
        expect(error.body["error"]["type"] == "overloaded_error", error.body)
        return
    finally:
        fake.reset()
    raise AssertionError("no APIStatusError")


def check_retry_after_then_success(client, fake):
    fake.script(
        {
            "kind": "error",
            "status": 529,
            "error_type": "overloaded_error",
            "message": "Overloaded",
            "times": 2,
            "retry_after": "0.01",
        },
        {"kind": "text", "text": "recovered"},
    )
    message = client.with_options(max_retries=2).messages.create(
        model=MODEL, max_tokens=256, messages=user("hi")
    )
    expect(message.content[0].text == "recovered", message.content)
    statuses = [r["status"] for r in fake.requests()]
    expect(statuses == [529, 529, 200], statuses)


def check_stream_error_event(client, fake):
    fake.script(
        {"kind": "stream_error", "after_events": 4, "reply": {"kind": "text", "text": "one two three"}}
    )
    try:
        with client.messages.stream(model=MODEL, max_tokens=256, messages=user("hi")) as stream:
            stream.get_final_message()
    except anthropic.APIStatusError as error:
        expect("overloaded_error" in str(error), str(error))
        return
    raise AssertionError("no APIStatusError from the error event")


def check_cut_stream(client, fake):
    fake.script({"kind": "cut", "after_events": 4, "reply": {"kind": "text", "text": "one two three"}})
    try:
        with client.with_options(max_retries=0).messages.stream(
            model=MODEL, max_tokens=256, messages=user("hi")
        ) as stream:
            final = stream.get_final_message()
    except Exception:  # noqa: BLE001 - any transport error is the expected outcome
        return
    raise AssertionError(f"a cut stream completed: {final}")


CHECKS = [
    check_plain_text,
    check_echo_default,
    check_tool_use_round_trip,
    check_stream_text,
    check_stream_tool_use,
    check_stream_thinking,
    check_invalid_request,
    check_edited_thinking_rejected,
    check_overloaded,
    check_retry_after_then_success,
    check_stream_error_event,
    check_cut_stream,
]


def main():
    binary = binary_path()
    if not binary.is_file():
        print(f"fake-anthropic binary not found at {binary}", file=sys.stderr)
        return 2
    proc, url = start_fake(binary)
    fake = Fake(url)
    client = anthropic.Anthropic(api_key="dummy-key", base_url=url, max_retries=0, timeout=20)
    passed = failed = 0
    started = time.monotonic()
    try:
        for check in CHECKS:
            fake.reset()
            try:
                check(client, fake)
            except Exception:  # noqa: BLE001 - report every failing check, then fail
                failed += 1
                print(f"FAIL {check.__name__}")
                traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {check.__name__}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        if code != 0:
            failed += 1
            print(f"FAIL fake-anthropic did not exit cleanly on SIGTERM (exit {code})")
    print(f"({time.monotonic() - started:.1f}s, anthropic {anthropic.__version__})")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
