#!/usr/bin/env python3
"""A claude-agent-http client: create a session, stream one turn, print what
the agent does (tool calls and their results) and its answer.

    python3 examples/client.py "Write hello.py that prints hi, then run it"

Settings from the environment:
    CLAUDE_AGENT_URL   the service (default http://127.0.0.1:8000)
    CLAUDE_AGENT_USER  the user_id to create the session for (default alice)
    CLAUDE_AGENT_SESSION  an existing session to talk to instead of a new one
    CLAUDE_AGENT_API_KEY  the API key to send, once the service has keys

Only the standard library is used, so it runs wherever python3 does. With
`requests` the same is `requests.post(url, json=body, stream=True)` and
`response.iter_lines(decode_unicode=True)` in place of `post` and
`sse_events` below.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE_URL = os.environ.get("CLAUDE_AGENT_URL", "http://127.0.0.1:8000").rstrip("/")
USER_ID = os.environ.get("CLAUDE_AGENT_USER", "alice")
API_KEY = os.environ.get("CLAUDE_AGENT_API_KEY", "")
# Longer than the service's keep-alive comments (every 15 s).
READ_TIMEOUT_S = 60


def post(path, body):
    """POSTs JSON; returns the open response (the caller reads it)."""
    request = urllib.request.Request(
        BASE_URL + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}),
        method="POST",
    )
    try:
        return urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        # Every error has the same body: {"error": code, "detail": sentence}.
        problem = json.loads(err.read() or b"{}")
        sys.exit(f"{path}: {err.code} {problem.get('error')}: {problem.get('detail')}")


def sse_events(response):
    """Yields the JSON of each `data:` event of a Server-Sent Events stream."""
    data = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            # A blank line ends an event.
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith(":"):
            continue  # a keep-alive comment
        else:
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield json.loads("\n".join(data))


def short(text, limit=160):
    """The first line of `text`, cut at `limit` characters."""
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[:limit] + "…"


def main():
    message = " ".join(sys.argv[1:]) or "List the files in your directory."

    session_id = os.environ.get("CLAUDE_AGENT_SESSION")
    if not session_id:
        with post("/api/v1/sessions", {"user_id": USER_ID}) as response:
            session = json.load(response)
        session_id = session["session_id"]
        print(f"session {session_id} in {session['cwd']}")

    with post("/api/v1/chat/stream", {"session_id": session_id, "message": message}) as response:
        for frame in sse_events(response):
            kind = frame["type"]
            if kind == "text_delta":
                print(frame["text"], end="", flush=True)
            elif kind == "tool_use":
                print(f"\n[tool_use] {frame['tool_name']} {json.dumps(frame['tool_input'])}", flush=True)
            elif kind == "tool_result":
                outcome = "error" if frame["is_error"] else "ok"
                print(f"[tool_result] {frame['tool_name']} {outcome}: {short(frame['content'])}", flush=True)
            elif kind == "done":
                print(
                    f"\n[done] stop_reason={frame['stop_reason']} model_calls={frame['num_turns']}"
                    f" tool_calls={len(frame['tool_calls'])} cost_usd={frame['cost_usd']}"
                )
            elif kind == "error":
                sys.exit(f"\n[error] {frame['code']}: {frame['error']}")


if __name__ == "__main__":
    main()
