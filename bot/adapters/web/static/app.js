// The playground: a timeline of /imagine jobs, each followed live over the API's server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
const timeline = $("timeline");

function token() {
  return localStorage.getItem("janus-bot-token") || "";
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

function needToken() {
  $("token-field").hidden = false;
  $("token").focus();
}

// One API call; resolves to [status, body] and never throws for HTTP errors. Bodies go as JSON: the bot
// refuses any other content type, so that another site's page cannot send it a plain form.
async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  try {
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) needToken();
    return [response.status, data];
  } catch (error) {
    return [0, { error: "The bot cannot be reached; is `janus-bot run` still running?" }];
  }
}

// An image URL the <img> can show; with a token the bytes are fetched with it.
async function imageSource(url) {
  if (!token()) return url;
  const response = await fetch(url, { headers: headers() });
  return URL.createObjectURL(await response.blob());
}

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function add(node) {
  timeline.append(node);
  node.scrollIntoView({ block: "end", behavior: "smooth" });
  return node;
}

function say(text, className = "") {
  return add(element("article", { className: `message bot ${className}` }, element("p", {}, text)));
}

function userName() {
  const field = $("user");
  const name = field.value.trim();
  if (!name) {
    say("Type your name at the top first; it is shown with your jobs.", "refused");
    field.focus();
  }
  return name;
}

// A job's card: status line, progress bar, preview, then the grid and its buttons.
class JobCard {
  constructor(jobId, title) {
    this.jobId = jobId;
    this.status = element("p", { className: "status" }, "Queued…");
    this.bar = element("progress", { max: 100, value: 0, hidden: true });
    this.preview = element("img", { className: "preview", alt: "preview", hidden: true });
    this.buttons = element("div", { className: "buttons" });
    this.cancel = element("button", { type: "button", "data-action": "cancel" }, "Cancel");
    this.cancel.addEventListener("click", () => this.act("cancel"));
    this.buttons.append(this.cancel);
    this.node = add(element("article", { className: "message bot job", "data-job-id": jobId },
      element("div", { className: "who" }, title), this.status, this.bar, this.preview, this.buttons));
  }

  // Read the job's event stream (fetch, so that a token can go with it); if the connection drops before
  // the final event, for instance while the bot restarts, listen again: the stream starts from the top.
  async follow() {
    for (let wait = 1000; !this.finished; wait = Math.min(wait * 2, 30000)) {
      try {
        const response = await fetch(`/api/jobs/${this.jobId}/events`, { headers: headers() });
        if (response.status === 404 || response.status === 401) {
          this.fail((await response.json().catch(() => ({}))).error || "Lost track of this job.");
          return;
        }
        if (response.ok && response.body) await this.read(response.body);
      } catch (error) {
        // the bot is unreachable for now; try again below
      }
      if (!this.finished) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const name = /^event: (.*)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (name && data && !this.finished) await this.on(name[1], JSON.parse(data[1]));
      }
    }
  }

  async on(name, data) {
    this.node.dataset.state = name;
    if (["done", "failed", "cancelled"].includes(name)) this.finished = true;
    if (name === "queued") {
      this.status.textContent = `Queued: position ${data.position}`;
    } else if (name === "started") {
      this.status.textContent = "Generating… 0%";
      this.bar.hidden = false;
    } else if (name === "progress") {
      this.status.textContent = `Generating… ${data.percent}%`;
      this.bar.hidden = false;
      this.bar.value = data.percent;
      if (data.preview_url) {
        this.preview.src = await imageSource(data.preview_url);
        this.preview.hidden = false;
      }
    } else if (name === "done") {
      await this.done(data);
    } else if (name === "failed") {
      this.fail(data.error);
    } else if (name === "cancelled") {
      this.end("Cancelled.");
    }
  }

  end(text) {
    this.status.textContent = text;
    this.bar.hidden = true;
    this.preview.hidden = true;
    this.cancel.remove();
  }

  fail(reason) {
    this.node.classList.add("failed");
    this.end(reason);
  }

  async done(data) {
    const count = data.image_urls.length;
    this.end(`Done: ${count} image${count === 1 ? "" : "s"}, seed ${data.seed}.`);
    const grid = element("img", { className: "grid", alt: "the finished images" });
    grid.src = await imageSource(data.grid_url);
    this.node.insertBefore(grid, this.buttons);
    if (this.kind === "upscale") return; // one finished image: nothing more to make from it here
    const reroll = element("button", { type: "button", "data-action": "reroll", title: "same prompt, new seed" }, "↻ Reroll");
    reroll.addEventListener("click", () => this.act("reroll"));
    this.buttons.append(reroll);
    for (const action of ["upscale", "vary"]) {
      for (let i = 0; i < count; i++) {
        const label = `${action === "upscale" ? "U" : "V"}${i + 1}`;
        const title = action === "upscale" ? `image ${i + 1}, upscaled` : `variations of image ${i + 1} (Shift: strong)`;
        const button = element("button", { type: "button", "data-action": action, "data-index": i, title }, label);
        button.addEventListener("click", (event) => this.act(action, i, event.shiftKey ? "strong" : "subtle"));
        this.buttons.append(button);
      }
    }
  }

  async act(action, index = 0, strength = "subtle") {
    const user = userName();
    if (!user) return;
    const body = action === "vary" ? { user, index, strength } : action === "upscale" ? { user, index } : { user };
    const [status, data] = await api("POST", `/api/jobs/${this.jobId}/${action}`, body);
    if (status >= 400 || status === 0) {
      say(data.error || `That did not work (HTTP ${status}).`, "refused");
      return;
    }
    if (action === "cancel") return; // the event stream says "cancelled"
    const what = { reroll: "↻ reroll", upscale: `U${index + 1}`, vary: `V${index + 1} (${strength})` }[action];
    follow(data.job_id, `${data.user}: ${what} of ${this.jobId}`, action);
  }
}

function follow(jobId, title, kind = "imagine") {
  const card = new JobCard(jobId, title);
  card.kind = kind;
  card.follow();
}

async function submit(event) {
  event.preventDefault();
  const field = $("command");
  let text = field.value.trim();
  if (!text) return;
  const user = userName();
  if (!user) return;
  if (!text.startsWith("/")) text = `/imagine ${text}`; // other slash commands: the bot says what works
  add(element("article", { className: "message user" }, element("div", { className: "who" }, user),
    element("p", {}, text)));
  field.value = "";
  const [status, data] = await api("POST", "/api/imagine", { user, command: text });
  if (status === 202) follow(data.job_id, `${data.user}: job ${data.job_id}`); // the name as the bot shows it
  else for (const line of (data.error || `The bot answered HTTP ${status}.`).split("\n")) say(line, "refused");
}

async function health() {
  const [status, data] = await api("GET", "/healthz");
  $("model").textContent = data.model
    ? `${data.model} on ${data.device} · ${data.queue_depth} waiting${status === 200 ? "" : " · generator down"}`
    : "the generator is starting…";
}

$("user").value = localStorage.getItem("janus-bot-user") || "";
$("user").addEventListener("change", () => localStorage.setItem("janus-bot-user", $("user").value.trim()));
$("token").addEventListener("change", () => localStorage.setItem("janus-bot-token", $("token").value.trim()));
$("composer").addEventListener("submit", submit);
health();
setInterval(health, 5000);
