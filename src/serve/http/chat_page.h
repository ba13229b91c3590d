// The chat page served at GET /: static HTML + JavaScript, no external files. It keeps the conversation
// in the page, sends it to /v1/chat/completions with stream: true and shows the reply as the
// server-sent events arrive (fetch() + a stream reader). Query parameters fill the fields and
// ?send=TEXT sends one message at load (the headless-browser test uses this); when a reply is complete
// <body data-state="done">, after a failure data-state="error" and #error holds the message.
#pragma once
#include <string_view>

namespace glmlab::serve::http {

inline constexpr std::string_view kChatPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>glmlab chat</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.2rem; margin: 0 0 .5rem; }
  details, #conversation, form { margin: .5rem 0; }
  label { display: block; font-size: .85rem; color: #555; margin-top: .4rem; }
  textarea, input { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; }
  .row { display: flex; gap: .5rem; } .row > div { flex: 1; }
  .msg { white-space: pre-wrap; padding: .5rem .7rem; border-radius: .4rem; margin: .4rem 0; }
  .user { background: #e8f0fe; } .assistant { background: #f3f3f3; } .system { background: #fff8e1; font-size: .9rem; }
  .who { font-size: .75rem; color: #666; display: block; }
  #error { color: #b00020; white-space: pre-wrap; }
  #status { font-size: .8rem; color: #666; }
  button { font: inherit; padding: .4rem 1.2rem; }
</style>
</head>
<body data-state="idle">
<h1>glmlab chat</h1>
<details id="settings">
  <summary>Settings</summary>
  <label for="system">System message</label>
  <textarea id="system" rows="2" placeholder="(none)"></textarea>
  <div class="row">
    <div><label for="temperature">Temperature (0 = greedy)</label><input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></div>
    <div><label for="top_p">top_p</label><input id="top_p" type="number" min="0.01" max="1" step="0.05" value="0.8"></div>
    <div><label for="max_tokens">Max tokens</label><input id="max_tokens" type="number" min="1" value="512"></div>
  </div>
  <label for="key">API key (when the server was started with --api-key)</label>
  <input id="key" type="password" autocomplete="off">
</details>
<div id="conversation"></div>
<div id="error"></div>
<form id="form">
  <textarea id="input" rows="3" placeholder="Message (Enter sends, Shift+Enter: new line)"></textarea>
  <div class="row"><div><button id="send" type="submit">Send</button> <button id="clear" type="button">New chat</button></div>
  <div id="status"></div></div>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const turns = [];  // {role, content} without the system message
let busy = false;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  $("conversation").append(div);
  return body;
}

function number(id, fallback) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

async function send(text) {
  if (busy || !text.trim()) return;
  busy = true;
  $("send").disabled = true;
  $("error").textContent = "";
  document.body.dataset.state = "busy";
  turns.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
  messages.push(...turns);
  const req = { model: "glmlab", messages, stream: true, stream_options: { include_usage: true },
                temperature: number("temperature", 0.8), max_tokens: Math.round(number("max_tokens", 512)) };
  if (req.temperature > 0) req.top_p = number("top_p", 0.8);
  const headers = { "Content-Type": "application/json" };
  if ($("key").value) headers["Authorization"] = "Bearer " + $("key").value;
  let reply = "", finish = null, usage = null;
  const t0 = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(req) });
    if (!res.ok) {
      let msg = "HTTP " + res.status;
      try { msg += ": " + (await res.json()).error.message; } catch (e) {}
      throw new Error(msg);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "", finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") { finished = true; break; }
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(obj.error.message);
          if (obj.usage) usage = obj.usage;
          const c = obj.choices && obj.choices[0];
          if (!c) continue;
          if (c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    if (!finish) throw new Error("the reply ended early");
    turns.push({ role: "assistant", content: reply });
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    $("status").textContent = "finish: " + finish + (usage ? ", " + usage.prompt_tokens + " prompt + " +
                              usage.completion_tokens + " reply tokens" : "") + ", " + s + " s";
    document.body.dataset.state = "done";
  } catch (e) {
    turns.pop();  // the failed turn stays on screen but is not sent with the next message
    $("error").textContent = String(e.message || e);
    document.body.dataset.state = "error";
  } finally {
    busy = false;
    $("send").disabled = false;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("clear").addEventListener("click", () => {
  turns.length = 0;
  $("conversation").textContent = "";
  $("status").textContent = "";
  $("error").textContent = "";
});

const params = new URLSearchParams(location.search);
for (const id of ["system", "temperature", "top_p", "max_tokens"])
  if (params.has(id)) $(id).value = params.get(id);
if (params.has("send")) send(params.get("send"));
</script>
</body>
</html>
)HTML";

}  // namespace glmlab::serve::http
