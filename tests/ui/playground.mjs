// Drives the /ui playground in headless Chromium the way a person would and
// checks what they would see. Usage: node playground.mjs <service-url> <scenario>
// Exits non-zero, printing what was wrong, when a check fails.
import { chromium } from "playwright-core";

const [url, scenario = "conversation"] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
const problems = [];
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Generous: the suite runs many tests at once on a small machine.
  page.setDefaultTimeout(45000);
  page.on("pageerror", (e) => problems.push("script error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });

  await page.goto(url + "/ui");
  await page.getByLabel("User").fill("ui-user");
  await page.getByRole("button", { name: "Create" }).click();
  const box = page.getByLabel("Message");
  await box.waitFor();

  if (scenario === "conversation") await conversation(page, box);
  else if (scenario === "reload-mid-turn") await reloadMidTurn(page, box);
  else if (scenario === "approval") await approval(page, box);
  else if (scenario === "question") await question(page, box);
  else throw new Error("unknown scenario " + scenario);

  check(problems.length === 0, problems.join("\n"));
  console.log("ok " + scenario);
} catch (error) {
  // What the person would have seen: the page's notice, if it showed one.
  const pages = browser.contexts().flatMap((c) => c.pages());
  for (const page of pages) {
    const notice = await page.locator("#notice").textContent().catch(() => null);
    if (notice) console.error("the page said: " + notice);
  }
  if (problems.length) console.error(problems.join("\n"));
  throw error;
} finally {
  await browser.close();
}

async function conversation(page, box) {
  await box.fill("List the files, then tell me");
  await box.press("Enter");

  // The streamed answer appears, rendered as Markdown.
  const answer = page.locator("article.assistant .text strong", { hasText: "hello-from-bash" });
  await answer.waitFor();
  // The Bash call is folded under its step; expanding it shows its output.
  const call = page.locator("details.tool", { hasText: "Bash" });
  await call.waitFor();
  check(!(await call.evaluate((d) => d.open)), "a tool call starts folded");
  const output = call.locator(".result pre");
  check(!(await output.isVisible()), "the folded call hides its output");
  await call.locator("summary").click();
  await output.waitFor({ state: "visible" });
  check((await output.textContent()).includes("hello-from-bash"), "the expanded call shows the command's output");
  // The todo list the agent wrote shows beside the conversation.
  await page.locator("#todos li", { hasText: "Saying hello" }).waitFor();
  // The file the agent wrote is listed beside the conversation and downloads.
  const file = page.locator("#files button", { hasText: "notes.md" });
  await file.waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), file.click()]);
  check(download.suggestedFilename() === "notes.md", "the download keeps the file's name");
  const saved = await download.path();
  const { readFile } = await import("node:fs/promises");
  check((await readFile(saved, "utf8")) === "# Notes\n", "the download has the file's content");
  // Usage and cost of the session.
  await page.locator("#usage", { hasText: "$" }).waitFor();
  await page.waitForFunction(() => !document.getElementById("send-button").disabled);

  // A reload shows the same conversation, from the service's history.
  await page.reload();
  await page.locator("article.user .bubble", { hasText: "List the files, then tell me" }).waitFor();
  await page.locator("article.assistant .text strong", { hasText: "hello-from-bash" }).waitFor();
  const again = page.locator("details.tool", { hasText: "Bash" });
  await again.locator("summary").click();
  await again.locator(".result pre", { hasText: "hello-from-bash" }).waitFor();
  await page.locator("#todos li", { hasText: "Saying hello" }).waitFor();
  // The session is listed and marked as the one shown.
  await page.locator('#sessions button[aria-current="true"]').waitFor();

  // Dark and light: the toggle switches the page's theme.
  const before = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.locator("#theme-button").click();
  const after = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(before !== after, `the theme toggle changes the page (${before} → ${after})`);
}

async function reloadMidTurn(page, box) {
  await box.fill("Take your time");
  await box.press("Enter");
  // The first words arrive while the model is still writing.
  await page.locator("article.assistant .text", { hasText: "First part" }).waitFor();
  await page.reload();
  // After the reload the page finds the running turn and follows it to its end.
  await page.locator("article.user .bubble", { hasText: "Take your time" }).waitFor();
  await page.locator("article.assistant .text", { hasText: "last part" }).waitFor({ timeout: 60000 });
  const text = await page.locator("article.assistant .text").last().textContent();
  check(text.split("First part").length === 2, "the answer after the reload is shown once: " + text);
  await page.waitForFunction(() => !document.getElementById("send-button").disabled);
}

async function approval(page, box) {
  await box.fill("Clean the build");
  await box.press("Enter");
  // The turn waits for a person: the call is shown with its command.
  const card = page.getByRole("group", { name: "Approve Bash" });
  await card.waitFor();
  check((await card.textContent()).includes("rm -rf build"), "the request shows the command");
  await card.getByRole("button", { name: "Allow", exact: true }).click();
  await card.waitFor({ state: "detached" });
  // Approved, the command ran and the agent answered.
  await page.locator("article.assistant .text", { hasText: "Cleaned" }).waitFor();
  const call = page.locator("details.tool", { hasText: "Bash" });
  await call.locator("summary").click();
  await call.locator(".status.ok").waitFor();
}

async function question(page, box) {
  await box.fill("Pick for me");
  await box.press("Enter");
  // The agent's question shows with its options; the person picks one.
  const card = page.locator(".approval", { hasText: "Which file next?" });
  await card.waitFor();
  await card.getByLabel("b.txt").check();
  await card.getByRole("button", { name: "Answer" }).click();
  await card.waitFor({ state: "detached" });
  await page.locator("article.assistant .text", { hasText: "You chose b.txt" }).waitFor();
}
