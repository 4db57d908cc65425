// The playground: a timeline of /imagine and /describe jobs (the user's recent ones after a reload), each followed
// live over the API's server-sent events; an admin's gallery of everyone's. Seeds stay strings: JavaScript rounds
// whole numbers above 2^53, and seeds go to 2^63 - 1. Regions are [x0, y0, x1, y1], fractions of a picture from its
// top left.
"use strict";

const $ = (id) => document.getElementById(id);
const timeline = $("timeline");
const PAGE = 10; // jobs per page of history
const cards = new Map(); // job id -> JobCard on the timeline
let about = null; // GET /api/about: the model, the defaults, who we are
let historyShown = false;
let olderUrl = null;
let galleryOlderUrl = null;
let reasked = null; // the model /api/about was last asked about again
let upload = null; // the picture the next /imagine starts from: { file, url }

function token() {
  return localStorage.getItem("janus-bot-token") || "";
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

function needToken() {
  $("token-field").hidden = false;
  if (document.activeElement !== $("user")) $("token").focus();
}

// One API call; resolves to [status, body] and never throws for HTTP errors. Bodies go as JSON: the bot
// refuses any other content type, so that another site's page cannot send it a plain form. A picture goes as a
// multipart form (FormData), which the bot takes only on /api/imagine and only with this page's Origin or a token.
async function api(method, path, body) {
  const form = body instanceof FormData;
  const init = { method, headers: headers(body && !form ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = form ? body : JSON.stringify(body);
  try {
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) needToken();
    return [response.status, data];
  } catch (error) {
    return [0, { error: "The bot cannot be reached; is `janus-bot run` still running?" }];
  }
}

// An image URL the <img> can show; with a token the bytes are fetched with it (once per URL).
const blobs = new Map();
async function imageSource(url) {
  if (!token()) return url;
  if (!blobs.has(url)) {
    const response = await fetch(url, { headers: headers() });
    blobs.set(url, URL.createObjectURL(await response.blob()));
  }
  return blobs.get(url);
}

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function button(label, action, onClick, attrs = {}) {
  const node = element("button", { type: "button", "data-action": action, ...attrs }, label);
  node.addEventListener("click", onClick);
  return node;
}

function add(node, before = null) {
  timeline.insertBefore(node, before);
  if (!before) node.scrollIntoView({ block: "end", behavior: "smooth" });
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

// The regions the chat platforms' menus offer, by the text of their fractions.
const REGION_NAMES = {
  "0,0.5,1,1": "the bottom half", "0,0,1,0.5": "the top half", "0,0,0.5,1": "the left half",
  "0.5,0,1,1": "the right half", "0.25,0.25,0.75,0.75": "the centre", "0,0,0.5,0.5": "the top left",
  "0.5,0,1,0.5": "the top right", "0,0.5,0.5,1": "the bottom left", "0.5,0.5,1,1": "the bottom right",
};

function regionOf(text) {
  return text.split(",").map(Number);
}

function regionText(region) {
  const percent = (value) => `${Math.round(value * 100)}%`;
  return REGION_NAMES[region.join(",")] ||
    `the part from ${percent(region[0])}, ${percent(region[1])} to ${percent(region[2])}, ${percent(region[3])}`;
}

// A box over a picture showing a region, in percent of the picture, so it follows the picture's size.
function place(box, region) {
  box.hidden = !region;
  if (!region) return;
  const [x0, y0, x1, y1] = region;
  Object.assign(box.style, { left: `${x0 * 100}%`, top: `${y0 * 100}%`, width: `${(x1 - x0) * 100}%`,
    height: `${(y1 - y0) * 100}%` });
}

// A rectangle dragged on a picture (its frame: an element the picture fills), in fractions of it. Pointer
// events, so that a mouse, a pen and a finger all draw it; CSS gives the frame touch-action: none while it
// draws, so that a finger's drag draws rather than scrolls. A tap without a drag calls onTap.
class RegionDrawer {
  constructor(frame, onDrawn, active = () => true) {
    this.frame = frame;
    this.onDrawn = onDrawn;
    this.onTap = null;
    this.active = active;
    this.region = null; // the one shown
    this.start = null; // the drag under way
    this.box = element("div", { className: "region-box", hidden: true });
    frame.append(this.box);
    frame.addEventListener("pointerdown", (event) => this.down(event));
    frame.addEventListener("pointermove", (event) => this.move(event));
    frame.addEventListener("pointerup", (event) => this.up(event));
    frame.addEventListener("pointercancel", () => this.stop());
  }

  at(event) {
    const box = this.frame.getBoundingClientRect();
    const clamp = (value) => Math.min(1, Math.max(0, value));
    return [clamp((event.clientX - box.left) / box.width), clamp((event.clientY - box.top) / box.height)];
  }

  rect(event) {
    const [x, y] = this.at(event);
    const [x0, y0] = this.start.point;
    const fraction = (value) => Math.round(value * 10000) / 10000;
    return [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)].map(fraction);
  }

  down(event) {
    if (!this.active() || !event.isPrimary || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault(); // no text selection, no dragging the picture itself
    this.frame.setPointerCapture(event.pointerId);
    this.start = { point: this.at(event), x: event.clientX, y: event.clientY, id: event.pointerId, moved: false };
  }

  move(event) {
    const start = this.start;
    if (!start || event.pointerId !== start.id) return;
    if (!start.moved && Math.hypot(event.clientX - start.x, event.clientY - start.y) < 4) return;
    start.moved = true;
    place(this.box, this.rect(event));
  }

  up(event) {
    const start = this.start;
    if (!start || event.pointerId !== start.id) return;
    const region = start.moved ? this.rect(event) : null;
    this.stop();
    if (!region) {
      if (this.onTap) this.onTap();
      return;
    }
    if (region[2] - region[0] < 0.01 || region[3] - region[1] < 0.01) return; // a slip, not a rectangle
    this.set(region);
    this.onDrawn(region);
  }

  stop() {
    this.start = null;
    place(this.box, this.region);
  }

  set(region) {
    this.region = region;
    place(this.box, region);
  }
}

// The select that names a region: a named one, or its "the part you drew" option holding a drawn one.
function choose(select, region) {
  const key = region.join(",");
  const drawn = select.querySelector("[data-drawn]");
  if (!REGION_NAMES[key]) {
    drawn.value = key;
    drawn.textContent = regionText(region);
    drawn.hidden = false;
  }
  select.value = key;
}

function when(seconds) {
  const date = new Date(seconds * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

function duration(seconds) {
  return seconds === null || seconds === undefined ? "—" : `${seconds.toFixed(1)} s`;
}

function promptLine(job) {
  return job.negative ? `${job.prompt} --no ${job.negative}` : job.prompt;
}

// The command that makes a job's pictures again: a seed typed back gives the same pictures.
function commandOf(job) {
  const parts = [`/imagine ${job.prompt}`, `--count ${job.count}`, `--cfg ${job.cfg}`,
    `--temperature ${job.temperature}`];
  if (job.negative) parts.push(`--no ${job.negative}`);
  parts.push(`--seed ${job.seed}`);
  return parts.join(" ");
}

// Small pictures (the demo model's are 48 px) are scaled up with hard edges rather than blurred.
function sharpWhenSmall(img) {
  const check = () => img.classList.toggle("small", img.naturalWidth < img.getBoundingClientRect().width);
  if (img.complete && img.naturalWidth) check();
  else img.addEventListener("load", check, { once: true });
}

// The picture viewer: one picture as large as the window allows, a link to it at its own size, a download.
async function view(url, caption, fileName) {
  const dialog = $("viewer");
  const source = await imageSource(url);
  const img = dialog.querySelector("img");
  img.classList.remove("small");
  img.src = source;
  dialog.querySelector(".caption").textContent = caption;
  dialog.querySelector("a.open").href = source;
  const download = dialog.querySelector("a.download");
  download.href = source;
  download.download = fileName;
  dialog.showModal();
  sharpWhenSmall(img);
}

// Pictures at a readable size, as square a grid as the PNG's; each opens in the viewer and can be described.
async function pictures(job, urls) {
  const columns = Math.ceil(Math.sqrt(urls.length));
  const box = element("div", { className: "pictures" });
  box.style.setProperty("--columns", columns);
  urls.forEach((url, i) => {
    const img = element("img", { alt: `image ${i + 1}`, loading: "lazy", draggable: false });
    const open = element("button", { type: "button", className: "picture", title: `Image ${i + 1}: open it large`,
      "data-index": i }, img);
    open.addEventListener("click", () => {
      if (open.closest(".regioning")) return; // a rectangle is being dragged on it: Vary (Region)
      view(url, `Image ${i + 1} of job ${job.job_id}: ${promptLine(job)}`, `janus-${job.job_id}-${i + 1}.png`);
    });
    const describeIt = button("Describe", "describe", () => describe({ jobId: job.job_id, index: i }),
      { className: "describe-one", "data-index": i, title: `prompts that would draw image ${i + 1}` });
    box.append(element("div", { className: "cell" }, open, describeIt));
    imageSource(url).then((source) => {
      img.src = source;
      sharpWhenSmall(img);
    });
  });
  return box;
}

// What a job started from, small, with the part made again marked: an image prompt's picture, or the image a Vary
// (Region) was made of; the picture a describe job reads.
function fromPicture(job) {
  const parent = job.kind === "region" && job.parent_id ? `/api/jobs/${job.parent_id}/images/${job.parent_index}.png`
    : null;
  const url = job.source_url || parent;
  const describes = job.kind === "describe";
  if (!url || !(job.region || describes)) return null;
  const img = element("img", { alt: describes ? "the picture it describes" : "the picture it started from",
    draggable: false });
  const box = element("div", { className: "region-box" });
  place(box, job.region);
  const title = describes ? "The picture it describes"
    : `Started from this picture: ${regionText(job.region)} made again, the rest kept`;
  const frame = element("div", { className: describes ? "from-picture described" : "from-picture", title }, img, box);
  img.addEventListener("error", () => frame.remove(), { once: true }); // deleted since
  imageSource(url).then((source) => {
    img.src = source;
  });
  return frame;
}

// A job's card: who and what, status line, progress bar, preview, then the pictures and their buttons.
class JobCard {
  constructor(job, before = null) {
    this.job = job;
    this.jobId = job.job_id;
    this.finished = false;
    this.status = element("p", { className: "status" }, "Queued…");
    this.bar = element("progress", { max: 100, value: 0, hidden: true });
    this.preview = element("img", { className: "preview", alt: "preview", hidden: true });
    this.buttons = element("div", { className: "buttons" });
    this.cancel = button("Cancel", "cancel", () => this.act("cancel"));
    this.buttons.append(this.cancel);
    const who = [job.user, when(job.created_at), job.made_from].filter(Boolean).join(" · ");
    const from = fromPicture(job);
    const asked = job.kind === "describe" ? "/describe" : promptLine(job);
    this.node = add(element("article", { className: "message bot job", "data-job-id": job.job_id },
      element("div", { className: "who" }, who), element("p", { className: "prompt" }, asked),
      ...(from ? [from] : []), this.status, this.bar, this.preview, this.buttons), before);
    cards.set(this.jobId, this);
  }

  // Show the job as it stands: a finished one at once, a live one followed to its end.
  async start() {
    const job = this.job;
    if (job.status === "done") await this.done({ seed: job.seed, image_urls: job.image_urls, prompts: job.prompts });
    else if (job.status === "failed") this.fail(job.error || "It failed.");
    else if (job.status === "cancelled") this.end("Cancelled.", "cancelled");
    else await this.follow();
  }

  // Read the job's event stream (fetch, so that a token can go with it); if the connection drops before
  // the final event, for instance while the bot restarts, listen again: the stream starts from the top.
  async follow() {
    for (let wait = 1000; !this.finished; wait = Math.min(wait * 2, 30000)) {
      try {
        const response = await fetch(`/api/jobs/${this.jobId}/events`, { headers: headers() });
        if ([401, 404, 410].includes(response.status)) {
          const error = (await response.json().catch(() => ({}))).error || "Lost track of this job.";
          if (response.status === 410) this.deleted(error);
          else this.fail(error);
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
    if (!["done", "failed", "cancelled"].includes(name)) this.node.dataset.state = name;
    if (name === "queued") {
      this.status.textContent = `Queued: position ${data.position}`;
    } else if (name === "started" && this.job.kind === "describe") {
      this.status.textContent = "Reading the picture…"; // no progress: its prompts come all at once
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
      this.end("Cancelled.", "cancelled");
    }
  }

  // The job's final state: what the status line says, and no more progress, preview or cancel.
  settle(text, state) {
    this.finished = true;
    this.job.status = state;
    this.node.dataset.state = state;
    this.status.textContent = text;
    this.bar.hidden = true;
    this.preview.hidden = true;
    this.cancel.remove();
  }

  end(text, state) {
    this.settle(text, state);
    this.controls(false);
  }

  fail(reason) {
    this.node.classList.add("failed");
    this.end(reason, "failed");
  }

  async done(data) {
    this.job.seed = data.seed;
    if (data.prompts) {
      this.described(data.prompts);
      return;
    }
    const count = data.image_urls.length;
    this.settle(count ? `Done: ${count} image${count === 1 ? "" : "s"}, seed ${data.seed}.`
      : "Done; its pictures are no longer stored (the bot deletes old ones: [bot] keep_days).", "done");
    if (count) this.node.insertBefore(await pictures(this.job, data.image_urls), this.buttons);
    this.controls(count > 0);
  }

  // A describe job's answer: its prompts, numbered, each with a button that imagines it and one that edits it first.
  described(prompts) {
    const n = prompts.length;
    this.settle(`Done: ${n} prompt${n === 1 ? "" : "s"} that would draw it.`, "done");
    const list = element("ol", { className: "prompts" });
    prompts.forEach((text, i) => {
      list.append(element("li", { "data-index": i }, element("span", { className: "said" }, text), " ",
        button("Imagine", "imagine", () => imaginePrompt(text),
          { "data-index": i, title: `make pictures of prompt ${i + 1}` }),
        button("Edit", "edit", () => {
          $("command").value = `/imagine ${text}`;
          $("command").focus();
        }, { className: "quiet", "data-index": i, title: "put it in the box below to change it first" })));
    });
    this.node.insertBefore(list, this.buttons);
    this.controls(false);
  }

  // The buttons under a finished job: what can be made from its pictures, then info and delete.
  controls(withPictures) {
    const main = element("div", { className: "row" });
    const makes = withPictures && this.job.kind !== "upscale"; // an upscale is one finished picture
    if (makes) {
      main.append(button("↻ Reroll", "reroll", () => this.act("reroll"), { title: "the same prompt, a new seed" }),
        button("✎ Remix", "remix", () => this.toggleRemix(), { title: "edit the prompt for ↻ and the V buttons" }));
    }
    main.append(button("Info", "info", () => this.toggleInfo(), { title: "everything about this job" }));
    this.deleteButton = button("Delete", "delete", () => this.remove(), { title: "delete its pictures" });
    main.append(this.deleteButton);
    this.buttons.append(main);
    if (!makes) return;
    const count = this.job.count;
    const upscales = element("div", { className: "row" });
    const variations = element("div", { className: "row" });
    for (let i = 0; i < count; i++) {
      upscales.append(button(`U${i + 1}`, "upscale", () => this.act("upscale", i),
        { "data-index": i, title: `image ${i + 1} alone, upscaled` }));
      variations.append(button(`V${i + 1}`, "vary", (event) => this.act("vary", i, event.shiftKey ? "strong" : null),
        { "data-index": i, title: `variations of image ${i + 1}` }));
    }
    // A visible choice, not only Shift-click: touch screens have no Shift key.
    const group = `strength-${this.jobId}`;
    const choice = (value, label, checked) => element("label", {},
      element("input", { type: "radio", name: group, value, checked }), ` ${label}`);
    this.strength = element("span", { className: "strength", role: "radiogroup", "aria-label": "Variations" },
      "Variations: ", choice("subtle", "subtle", true), choice("strong", "strong", false));
    this.regionButton = button("▭ Vary (Region)", "region", () => this.toggleRegion(),
      { title: "drag a rectangle on a picture: only that part is made again", "aria-pressed": "false" });
    variations.append(this.strength, this.regionButton);
    this.buttons.append(upscales, variations);
  }

  // Vary (Region): while it is on, a drag on a picture draws the part to make again (the selects say the same
  // for a keyboard), and the bar's button makes it, under the Remix text while that is open.
  toggleRegion() {
    if (!this.regionBar) this.regionControls();
    const on = !this.node.classList.contains("regioning");
    this.node.classList.toggle("regioning", on);
    this.regionBar.hidden = !on;
    this.regionButton.setAttribute("aria-pressed", String(on));
    this.drawers.forEach((drawer, i) => drawer.set(on && i === this.picked.index ? this.picked.region : null));
  }

  regionControls() {
    const frames = [...this.node.querySelectorAll(".pictures .picture")];
    const regioning = () => this.node.classList.contains("regioning");
    this.drawers = frames.map((frame, i) => {
      const drawer = new RegionDrawer(frame, (region) => this.pick(i, region), regioning);
      drawer.onTap = () => this.pick(i, regionOf(this.regionPart.value));
      return drawer;
    });
    this.regionImage = element("select", { "aria-label": "Image" },
      ...frames.map((_, i) => element("option", { value: String(i) }, `image ${i + 1}`)));
    this.regionPart = element("select", { "aria-label": "Part" },
      ...Object.entries(REGION_NAMES).map(([value, text]) => element("option", { value }, text)),
      element("option", { value: "", hidden: true, "data-drawn": "" }, "the part you drew"));
    const picked = () => this.pick(Number(this.regionImage.value), regionOf(this.regionPart.value));
    this.regionImage.addEventListener("change", picked);
    this.regionPart.addEventListener("change", picked);
    this.regionGo = button("Make it again", "vary-region", () => this.varyRegion());
    this.regionBar = element("div", { className: "region-bar", hidden: true },
      element("p", { className: "note" }, "Drag a rectangle on a picture, or choose below: that part is made " +
        "again and the rest kept (with the Remix text while it is open)."),
      element("p", { className: "row" }, element("label", {}, "Make again ", this.regionPart),
        element("label", {}, " of ", this.regionImage), this.regionGo));
    this.node.insertBefore(this.regionBar, this.buttons);
    this.pick(0, regionOf(this.regionPart.value));
  }

  pick(index, region) {
    this.drawers.forEach((drawer, i) => drawer.set(i === index ? region : null));
    this.picked = { index, region };
    this.regionImage.value = String(index);
    choose(this.regionPart, region);
    this.regionGo.textContent = `Vary (Region) of image ${index + 1}`;
    this.regionGo.title = `make ${regionText(region)} of image ${index + 1} again, keep the rest`;
  }

  async varyRegion() {
    const { index, region } = this.picked;
    if (await this.act("vary", index, null, region)) this.toggleRegion();
  }

  // Remix, in place: the prompt and negative prompt the next ↻ and V use, while the editor is open.
  toggleRemix() {
    if (!this.remix) {
      this.remixPrompt = element("textarea", { rows: 2, maxLength: 1000 }, this.job.prompt);
      this.remixNegative = element("input", { value: this.job.negative || "", placeholder: "nothing" });
      this.remix = element("div", { className: "remix" },
        element("label", {}, "Prompt ", this.remixPrompt),
        element("label", {}, "Not in the picture (--no) ", this.remixNegative),
        element("p", { className: "note" }, "↻ Reroll and the V buttons use this text while it is open."));
      this.node.insertBefore(this.remix, this.buttons);
      this.remixPrompt.focus();
      return;
    }
    this.remix.hidden = !this.remix.hidden;
  }

  remixed() {
    if (!this.remix || this.remix.hidden) return {};
    return { prompt: this.remixPrompt.value, negative: this.remixNegative.value };
  }

  async toggleInfo() {
    if (this.info) {
      this.info.remove();
      this.info = null;
      return;
    }
    const [status, job] = await api("GET", `/api/jobs/${this.jobId}`);
    if (status !== 200) {
      say(job.error || `That did not work (HTTP ${status}).`, "refused");
      return;
    }
    const describes = job.kind === "describe";
    const rows = [
      ["prompt", "Prompt", job.prompt], ["negative", "Not (--no)", job.negative], ["seed", "Seed", job.seed],
      ["count", describes ? "Prompts" : "Images", String(job.count)],
      ["cfg", "cfg", describes ? null : String(job.cfg)],
      ["temperature", "Temperature", String(job.temperature)], ["model", "Model", job.model_name || "unknown"],
      ["user", "By", job.user], ["when", "When", new Date(job.created_at * 1000).toLocaleString()],
      ["waited", "Waited", duration(job.waited_s)], ["ran", "Ran", duration(job.ran_s)],
      ["made_from", "Made from", job.made_from],
      ["region", "Made again", job.region && `${regionText(job.region)} (${job.region.join(", ")})`],
      ["job", "Job", job.job_id],
    ];
    this.info = element("div", { className: "info" });
    const list = element("dl");
    for (const [field, label, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      list.append(element("dt", {}, label), element("dd", { "data-field": field }, value));
    }
    list.querySelector('[data-field="model"]').title = job.model || "";
    const reuse = button("Use these settings", "reuse", () => {
      $("command").value = commandOf(job);
      $("command").focus();
    }, { title: "put this job's command, with its seed, in the box below" });
    this.info.append(list, ...(describes ? [] : [reuse]));
    this.node.insertBefore(this.info, this.buttons);
  }

  // Delete takes a second click, so that one slip deletes nothing.
  async remove() {
    if (!this.deleteButton.dataset.armed) {
      this.deleteButton.dataset.armed = "1";
      this.deleteButton.textContent = "Delete? Click again";
      setTimeout(() => {
        delete this.deleteButton.dataset.armed;
        this.deleteButton.textContent = "Delete";
      }, 5000);
      return;
    }
    const [status, data] = await api("DELETE", `/api/jobs/${this.jobId}`);
    if (status !== 200) {
      say(data.error || `That did not work (HTTP ${status}).`, "refused");
      return;
    }
    this.deleted();
  }

  deleted(text = "Deleted.") {
    this.settle(text, "deleted");
    this.node.classList.add("deleted");
    for (const part of this.node.querySelectorAll(".pictures, .prompts, .remix, .info, .buttons, .preview, progress")) {
      part.remove();
    }
  }

  // A request about this job; whether it was taken.
  async act(action, index = 0, strength = null, region = null) {
    const user = userName();
    if (!user) return false;
    let body = { user };
    if (action === "upscale") body = { user, index };
    if (action === "vary" && region) body = { user, index, region, ...this.remixed() };
    else if (action === "vary") {
      const chosen = strength || this.strength.querySelector("input:checked").value;
      body = { user, index, strength: chosen, ...this.remixed() };
    }
    if (action === "reroll") body = { user, ...this.remixed() };
    const [status, data] = await api("POST", `/api/jobs/${this.jobId}/${action}`, body);
    if (status >= 400 || status === 0) {
      say(data.error || `That did not work (HTTP ${status}).`, "refused");
      return false;
    }
    if (action !== "cancel") await show(data.job_id); // a cancel: the event stream says "cancelled"
    return true;
  }
}

// A new job (or one from the history) on the timeline.
async function show(jobId, before = null) {
  if (cards.has(jobId)) return cards.get(jobId);
  const [status, job] = await api("GET", `/api/jobs/${jobId}`);
  if (status !== 200) {
    say(job.error || `That did not work (HTTP ${status}).`, "refused");
    return null;
  }
  const card = new JobCard(job, before);
  card.start();
  return card;
}

// The user's recent jobs, oldest first above what is already shown; "Show older jobs" goes further back.
async function history(url = `/api/jobs?limit=${PAGE}`) {
  const [status, data] = await api("GET", url);
  if (status !== 200) return;
  historyShown = true;
  const anchor = $("history-more").nextElementSibling;
  for (const job of [...data.jobs].reverse()) {
    if (cards.has(job.job_id)) continue;
    new JobCard(job, anchor).start();
  }
  olderUrl = data.older_url;
  $("history-more").hidden = !olderUrl;
  if (url.indexOf("before=") < 0) timeline.lastElementChild.scrollIntoView({ block: "end" });
}

// What the user asked, on the timeline as they would type it, then its job's card or the bot's reasons why not.
async function ask(user, said, path, body) {
  add(element("article", { className: "message user" }, element("div", { className: "who" }, user), ...said));
  const [status, data] = await api("POST", path, body);
  if (status === 202) {
    await show(data.job_id);
    return true;
  }
  for (const line of (data.error || `The bot answered HTTP ${status}.`).split("\n")) say(line, "refused");
  return false;
}

function sentPicture(picture) {
  return element("img", { className: "sent-picture", src: picture.url, alt: "the picture sent" });
}

const DESCRIBE = /^\/describe(?:\s+(?:--count|-n)\s+(\S+))?\s*$/i; // "/describe", "/describe --count 2"

async function submitCommand(text) {
  const user = userName();
  if (!user) return;
  if (!text.startsWith("/")) text = `/imagine ${text}`; // other slash commands: the bot says what works
  if (/^\/describe\b/i.test(text)) {
    const typed = DESCRIBE.exec(text);
    if (!typed) say("Type /describe, or /describe --count N for N prompts (1-8).", "refused");
    else if (!upload) say("Attach the picture to describe first (+ Picture, or drop or paste it here), or press " +
      "Describe on one of the pictures above.", "refused");
    else await describe({ picture: upload, count: typed[1] });
    return;
  }
  const picture = upload;
  let body = { user, command: text };
  if (picture) {
    body = new FormData();
    body.append("user", user);
    body.append("command", text);
    body.append("region", $("upload-region").value);
    body.append("image", picture.file, picture.file.name || "picture");
  }
  const said = [...(picture ? [sentPicture(picture)] : []), element("p", {}, text)];
  if (await ask(user, said, "/api/imagine", body) && picture && upload === picture) detach();
}

// An Imagine button under a describe job's prompts: the prompt as it is, never read as a command line.
async function imaginePrompt(prompt) {
  const user = userName();
  if (user) await ask(user, [element("p", {}, `/imagine ${prompt}`)], "/api/imagine", { user, prompt });
}

// /describe: prompts that would draw a picture, image `index` of job `jobId` or an attached `picture`.
async function describe({ jobId = null, index = 0, picture = null, count = null }) {
  const user = userName();
  if (!user) return;
  const what = picture ? "" : ` image ${index + 1} of job ${jobId}`;
  const said = [...(picture ? [sentPicture(picture)] : []),
    element("p", {}, `/describe${what}${count ? ` --count ${count}` : ""}`)];
  let body = { user, job_id: jobId, index, ...(count ? { count: Number(count) } : {}) };
  if (picture) {
    body = new FormData();
    body.append("user", user);
    if (count) body.append("count", count);
    body.append("image", picture.file, picture.file.name || "picture");
  }
  if (await ask(user, said, "/api/describe", body) && picture && upload === picture) detach();
}

// -- a picture to start from: picked, dropped or pasted, with the part of it to make again --

const uploadDrawer = new RegionDrawer($("upload-pick"), (region) => choose($("upload-region"), region));

function attach(file) {
  if (!file) return;
  const most = about && about.uploads ? about.uploads.max_mb : null;
  if (most && file.size > most * 2 ** 20) {
    say(`That picture is ${(file.size / 2 ** 20).toFixed(1)} MB; pick one of at most ${most} MB.`, "refused");
    return;
  }
  upload = { file, url: URL.createObjectURL(file) }; // kept: the message that sends it shows it
  $("upload-thumb").src = upload.url;
  $("upload-name").textContent = file.name || "a pasted picture";
  const region = $("upload-region");
  region.querySelector("[data-drawn]").hidden = true;
  region.value = "0,0.5,1,1";
  uploadDrawer.set(regionOf(region.value));
  $("attachment").hidden = false;
  $("command").focus();
}

function detach() {
  upload = null;
  $("attachment").hidden = true;
  $("picture").value = "";
}

function carriesFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

function acceptPictures() {
  let over = 0; // dragenter and dragleave come for every element crossed
  const done = () => {
    over = 0;
    document.body.classList.remove("dropping");
  };
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    over += 1;
    document.body.classList.add("dropping");
  });
  document.addEventListener("dragleave", (event) => {
    if (carriesFiles(event) && --over <= 0) done();
  });
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) event.preventDefault(); // else the browser opens the file instead
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    done();
    attach(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...((event.clipboardData && event.clipboardData.files) || [])]
      .find((item) => item.type.startsWith("image/"));
    if (!file) return;
    event.preventDefault();
    attach(file);
  });
  $("attach").addEventListener("click", () => $("picture").click());
  $("picture").addEventListener("change", () => attach($("picture").files[0]));
  $("detach").addEventListener("click", detach);
  $("describe-upload").addEventListener("click", () => upload && describe({ picture: upload }));
  $("upload-region").addEventListener("change", () => uploadDrawer.set(regionOf($("upload-region").value)));
}

async function submit(event) {
  event.preventDefault();
  const field = $("command");
  const text = field.value.trim();
  if (!text) return;
  field.value = "";
  await submitCommand(text);
}

// -- the admin's gallery of everyone's jobs --

function galleryTile(job) {
  const img = element("img", { alt: job.prompt, loading: "lazy" });
  const open = element("button", { type: "button", className: "picture", title: "open it large" }, img);
  open.addEventListener("click", () => view(job.grid_url, `${job.user}: ${promptLine(job)}`,
    `janus-${job.job_id}.png`));
  imageSource(job.grid_url).then((source) => {
    img.src = source;
    sharpWhenSmall(img);
  });
  const tile = element("figure", { className: "tile", "data-job-id": job.job_id }, open,
    element("figcaption", {}, `${job.user}: ${promptLine(job)}`));
  const remove = button("Delete", "delete", async () => {
    if (!remove.dataset.armed) {
      remove.dataset.armed = "1";
      remove.textContent = "Delete? Click again";
      return;
    }
    const [status, data] = await api("DELETE", `/api/jobs/${job.job_id}`);
    if (status !== 200) {
      remove.textContent = data.error || `That did not work (HTTP ${status}).`;
      return;
    }
    tile.remove();
    cards.get(job.job_id)?.deleted();
  });
  tile.append(remove);
  return tile;
}

async function gallery(url = "/api/jobs?everyone=1&limit=24") {
  const [status, data] = await api("GET", url);
  if (status !== 200) {
    say(data.error || `That did not work (HTTP ${status}).`, "refused");
    return;
  }
  for (const job of data.jobs) {
    if (job.status === "done" && job.grid_url) $("gallery-tiles").append(galleryTile(job));
  }
  galleryOlderUrl = data.older_url;
  $("gallery-older").hidden = !galleryOlderUrl;
}

function toggleGallery() {
  const showing = $("gallery").hidden;
  $("gallery").hidden = !showing;
  timeline.hidden = showing;
  $("composer").hidden = showing;
  $("gallery-toggle").textContent = showing ? "Back to your jobs" : "Gallery (everyone)";
  if (showing) {
    $("gallery-tiles").replaceChildren();
    gallery();
  }
}

// -- who we are and what runs --

async function hello() {
  const [status, data] = await api("GET", "/api/about");
  if (status !== 200) return;
  about = data;
  const name = $("user");
  const note = $("name-note");
  if (data.you.console) {
    if (!name.value) name.value = data.you.name;
    note.textContent = `You are on this machine's console: no token needed, and your jobs show under the name above ` +
      `(${data.you.name} unless you type another).`;
  } else {
    note.textContent = name.value ? "" : "Type your name to start; it is shown with your jobs.";
  }
  $("gallery-toggle").hidden = !data.you.admin;
  if (!data.you.admin && !$("gallery").hidden) toggleGallery();
  const demo = $("demo");
  demo.hidden = !data.model.demo;
  const command = $("command");
  command.placeholder = command.dataset.placeholder ??= command.placeholder; // the page's own, for real models
  if (data.model.demo) {
    $("demo-draws").textContent = data.model.draws;
    command.placeholder = `/imagine ${data.model.examples[0]} --count 4`; // a prompt the demo draws
    const chips = demo.querySelector(".chips");
    chips.replaceChildren("Try: ");
    for (const example of data.model.examples) {
      const chip = element("button", { type: "button", className: "chip", title: "make it" }, example);
      chip.addEventListener("click", () => submitCommand(`/imagine ${example}`));
      chips.append(chip);
    }
  }
  if (!historyShown) await history();
  health();
}

async function health() {
  const [status, data] = await api("GET", "/healthz");
  const model = $("model");
  if (!data.model) {
    model.textContent = "the generator is starting…";
    return;
  }
  if (about && about.model.path !== data.model && reasked !== data.model) {
    reasked = data.model; // once per model, whatever /api/about answers
    hello(); // the model became known (a pool's first worker) or changed: its name, and the demo's chips
    return;
  }
  const name = (about && about.model.name) || data.model;
  model.title = data.model;
  model.textContent = `${name} on ${data.device} · ${data.queue_depth} waiting${status === 200 ? "" : " · generator down"}`;
  if (about && about.model.demo) model.append(" ", element("span", { className: "badge" }, "demo"));
}

function openViewerClose() {
  const dialog = $("viewer");
  dialog.querySelector(".close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click beside the picture
  });
}

$("user").value = localStorage.getItem("janus-bot-user") || "";
$("user").addEventListener("change", () => {
  localStorage.setItem("janus-bot-user", $("user").value.trim());
  if ($("user").value.trim() && about && !about.you.console) $("name-note").textContent = "";
});
$("token-toggle").addEventListener("click", () => {
  $("token-field").hidden = !$("token-field").hidden;
  if (!$("token-field").hidden) $("token").focus();
});
$("token").value = token();
$("token").addEventListener("change", () => {
  localStorage.setItem("janus-bot-token", $("token").value.trim());
  blobs.clear();
  hello();
});
$("composer").addEventListener("submit", submit);
$("older").addEventListener("click", () => olderUrl && history(olderUrl));
$("gallery-toggle").addEventListener("click", toggleGallery);
$("gallery-older").addEventListener("click", () => galleryOlderUrl && gallery(galleryOlderUrl));
openViewerClose();
acceptPictures();
hello();
setInterval(health, 5000);
