// A claude-agent-http client: create a session, stream one turn, print what
// the agent does (tool calls and their results) and its answer. Plain fetch
// and a stream reader, so the same module runs in Node 20+ and in a browser
// (see browser.html).
//
//   node examples/client.mjs "Write hello.py that prints hi, then run it"
//
// Settings from the environment (Node):
//   CLAUDE_AGENT_URL      the service (default http://127.0.0.1:8000)
//   CLAUDE_AGENT_USER     the user_id to create the session for (default alice)
//   CLAUDE_AGENT_SESSION  an existing session to talk to instead of a new one
//   CLAUDE_AGENT_API_KEY  the API key to send, once the service has keys

// The key Node was given; a browser page has none (keys do not belong in pages).
const apiKey = globalThis.process?.env?.CLAUDE_AGENT_API_KEY ?? "";

/** POSTs JSON; throws with the service's error code and detail on failure. */
async function post(baseUrl, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(baseUrl + path, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    // Every error has the same body: {"error": code, "detail": sentence}.
    const problem = await response.json().catch(() => ({}));
    throw new Error(`${path}: ${response.status} ${problem.error}: ${problem.detail}`);
  }
  return response;
}

/** Yields the JSON of each `data:` event of a Server-Sent Events body. */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        // A blank line ends an event.
        if (data.length) yield JSON.parse(data.join("\n"));
        data = [];
      } else if (line.startsWith(":")) {
        // a keep-alive comment
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let rest = colon < 0 ? "" : line.slice(colon + 1);
        if (rest.startsWith(" ")) rest = rest.slice(1);
        if (field === "data") data.push(rest);
      }
    }
  }
  if (data.length) yield JSON.parse(data.join("\n"));
}

/** Creates a session for `userId` unless `sessionId` is given. */
export async function openSession(baseUrl, { userId = "alice", sessionId } = {}) {
  if (sessionId) return { session_id: sessionId };
  const response = await post(baseUrl, "/api/v1/sessions", { user_id: userId });
  return response.json();
}

/** Streams one turn, calling `onFrame` for each frame; returns the `done` frame. */
export async function streamTurn(baseUrl, sessionId, message, onFrame) {
  const response = await post(baseUrl, "/api/v1/chat/stream", {
    session_id: sessionId,
    message,
  });
  for await (const frame of sseEvents(response.body)) {
    onFrame(frame);
    if (frame.type === "done") return frame;
    if (frame.type === "error") throw new Error(`${frame.code}: ${frame.error}`);
  }
  throw new Error("the stream ended without a done frame");
}

/** The first line of `text`, cut at `limit` characters. */
export function short(text, limit = 160) {
  const first = (text ?? "").split("\n")[0];
  return first.length <= limit ? first : first.slice(0, limit) + "…";
}

/** One line of output per frame: text as it comes, tools on lines of their own. */
export function describe(frame) {
  switch (frame.type) {
    case "text_delta":
      return frame.text;
    case "tool_use":
      return `\n[tool_use] ${frame.tool_name} ${JSON.stringify(frame.tool_input)}\n`;
    case "tool_result":
      return `[tool_result] ${frame.tool_name} ${frame.is_error ? "error" : "ok"}: ${short(frame.content)}\n`;
    case "done":
      return (
        `\n[done] stop_reason=${frame.stop_reason} model_calls=${frame.num_turns}` +
        ` tool_calls=${frame.tool_calls.length} cost_usd=${frame.cost_usd}\n`
      );
    default:
      return "";
  }
}

async function main() {
  const env = process.env;
  const baseUrl = (env.CLAUDE_AGENT_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
  const message = process.argv.slice(2).join(" ") || "List the files in your directory.";
  const session = await openSession(baseUrl, {
    userId: env.CLAUDE_AGENT_USER ?? "alice",
    sessionId: env.CLAUDE_AGENT_SESSION,
  });
  if (session.cwd) console.log(`session ${session.session_id} in ${session.cwd}`);
  await streamTurn(baseUrl, session.session_id, message, (frame) =>
    process.stdout.write(describe(frame)),
  );
}

// Run as a script in Node; imported (a browser, another module), only export.
const isScript =
  typeof process !== "undefined" &&
  process.argv?.[1] !== undefined &&
  decodeURIComponent(new URL(import.meta.url).pathname) === process.argv[1];
if (isScript) {
  main().catch((error) => {
    console.error(`\n[error] ${error.message}`);
    process.exit(1);
  });
}
