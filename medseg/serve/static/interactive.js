// medseg interactive: draws the slice and the mask on a canvas and sends prompts to the JSON API.
// Prompt coordinates are (row, col) pixels of the slice; the pixel centre of [r, c] is (r, c).
"use strict";

const state = {
  image: null,        // the server's image info: id, name, num_slices, slice_shape, ...
  slice: 0,
  tool: "click",
  picture: null,      // the slice's HTMLImageElement
  mask: null,         // {shape, counts}
  prompts: [],
  drag: null,         // {start: [r, c], points: [[r, c]...], positive}
  busy: false,
  interactions: 0,
  area: 0,
};
window.medseg = state;  // for tests and the console

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const context = canvas.getContext("2d");
const overlay = document.createElement("canvas");

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch (error) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
  status.dataset.area = String(state.area);
  status.dataset.interactions = String(state.interactions);
  status.dataset.busy = String(state.busy);
}

async function busy(label, work) {
  if (state.busy) return;
  state.busy = true;
  setStatus(label + "…");
  const start = performance.now();
  try {
    const message = await work();
    state.busy = false;
    const ms = performance.now() - start;
    setStatus(message === undefined ? `done in ${ms.toFixed(0)} ms` : message.replace("{ms}", ms.toFixed(0)));
  } catch (error) {
    state.busy = false;
    setStatus(error.message, true);
  }
}

// --- opening images and slices ---------------------------------------------------------------------------

async function showImage(info) {
  state.image = info;
  state.slice = Math.floor(info.num_slices / 2);
  $("image-name").textContent = `${info.name} — ${info.spatial_shape.join("×")}, ${info.channels} channel(s)`;
  $("slices").hidden = info.num_slices <= 1;
  $("propagate").disabled = info.num_slices <= 1;
  $("slice").max = String(info.num_slices - 1);
  $("slice").value = String(state.slice);
  canvas.width = info.slice_shape[1];
  canvas.height = info.slice_shape[0];
  overlay.width = canvas.width;
  overlay.height = canvas.height;
  fitCanvas();
  await loadSlice(state.slice);
}

async function loadSlice(index, ticket) {
  const image = state.image;
  const url = `/api/images/${image.id}/slices/${index}/image.png`;
  const picture = new Image();
  const loaded = new Promise((resolve, reject) => {
    picture.onload = resolve;
    picture.onerror = () => reject(new Error(`cannot load slice ${index}`));
  });
  picture.src = url;
  const maskResponse = await api("GET", `/api/images/${image.id}/slices/${index}/mask`);
  await loaded;
  if (state.image !== image || (ticket !== undefined && ticket !== state.sliceTicket)) return;
  state.slice = index;
  state.picture = picture;
  applyMask(await maskResponse.json());
  $("slice-label").textContent = `slice ${index + 1} / ${image.num_slices}`;
}

function applyMask(result) {
  state.mask = result.mask;
  state.prompts = result.prompts;
  state.area = result.area;
  const [height, width] = result.mask.shape;
  const pixels = new ImageData(width, height);
  let offset = 0;
  result.mask.counts.forEach((count, run) => {
    if (run % 2 === 1) {
      for (let i = offset; i < offset + count; i++) {
        pixels.data.set([255, 70, 70, 110], i * 4);
      }
    }
    offset += count;
  });
  overlay.getContext("2d").putImageData(pixels, 0, 0);
  draw();
}

function fitCanvas() {
  const stage = $("stage");
  if (!state.image) return;
  const scale = Math.max(0.1, Math.min(stage.clientWidth / canvas.width, stage.clientHeight / canvas.height));
  canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
  canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
}

// --- drawing ---------------------------------------------------------------------------------------------

function draw() {
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (state.picture) context.drawImage(state.picture, 0, 0);
  context.drawImage(overlay, 0, 0);
  const unit = Math.max(1, canvas.width / canvas.clientWidth);  // one screen pixel in image pixels
  for (const prompt of state.prompts) drawPrompt(prompt, unit);
  if (state.drag && state.drag.moved) drawPrompt(dragPrompt(state.drag), unit);
}

function colour(positive) {
  return positive ? "#3ee07a" : "#4aa3ff";
}

function drawPrompt(prompt, unit) {
  context.lineWidth = 2 * unit;
  if (prompt.type === "click") {
    context.fillStyle = colour(prompt.positive);
    context.beginPath();
    context.arc(prompt.point[1] + 0.5, prompt.point[0] + 0.5, 4 * unit, 0, 2 * Math.PI);
    context.fill();
  } else if (prompt.type === "box") {
    context.strokeStyle = "#ffd23e";
    const [r0, c0] = prompt.start;
    const [r1, c1] = prompt.stop;
    context.strokeRect(Math.min(c0, c1), Math.min(r0, r1), Math.abs(c1 - c0) + 1, Math.abs(r1 - r0) + 1);
  } else {
    context.strokeStyle = colour(prompt.positive);
    context.beginPath();
    prompt.points.forEach(([r, c], i) => (i ? context.lineTo(c + 0.5, r + 0.5) : context.moveTo(c + 0.5, r + 0.5)));
    context.stroke();
  }
}

// --- interactions ----------------------------------------------------------------------------------------

function pixelOf(event) {
  const rect = canvas.getBoundingClientRect();
  const col = ((event.clientX - rect.left) * canvas.width) / rect.width - 0.5;
  const row = ((event.clientY - rect.top) * canvas.height) / rect.height - 0.5;
  const clamp = (value, size) => Math.min(Math.max(value, 0), size - 1);
  return [clamp(row, canvas.height), clamp(col, canvas.width)];
}

function dragPrompt(drag) {
  if (state.tool === "box") return { type: "box", start: drag.start, stop: drag.points[drag.points.length - 1] };
  if (state.tool === "scribble") return { type: "scribble", positive: drag.positive, points: drag.points };
  return { type: "click", positive: drag.positive, point: drag.start };
}

async function send(prompt) {
  const image = state.image;
  const index = state.slice;
  await busy("segmenting", async () => {
    const response = await api("POST", `/api/images/${image.id}/prompts`, { ...prompt, slice: index });
    const result = await response.json();
    if (state.image !== image || state.slice !== index) return undefined;
    state.interactions += 1;
    applyMask(result);
    return `${result.area} pixels · model ${result.predict_ms.toFixed(0)} ms · server ${result.total_ms.toFixed(0)}` +
      " ms · round trip {ms} ms";
  });
}

canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!state.image || state.busy) return;
  event.preventDefault();
  const point = pixelOf(event);
  state.drag = { start: point, points: [point], positive: event.button === 0 && !event.shiftKey, moved: false };
});
canvas.addEventListener("mousemove", (event) => {
  if (!state.drag) return;
  const point = pixelOf(event);
  const last = state.drag.points[state.drag.points.length - 1];
  if (Math.hypot(point[0] - last[0], point[1] - last[1]) * (canvas.clientWidth / canvas.width) < 2) return;
  state.drag.points.push(point);
  state.drag.moved = true;
  draw();
});
window.addEventListener("mouseup", (event) => {
  const drag = state.drag;
  if (!drag) return;
  if (event.target === canvas) drag.points.push(pixelOf(event));
  state.drag = null;
  if (state.tool !== "click" && !drag.moved) {
    draw();
    return;  // a box or scribble needs a drag
  }
  draw();
  send(dragPrompt(drag));
});
canvas.addEventListener("wheel", (event) => {
  if (!state.image || state.image.num_slices <= 1) return;
  event.preventDefault();
  changeSlice(state.slice + (event.deltaY > 0 ? 1 : -1));
}, { passive: false });

function changeSlice(index) {
  index = Math.min(Math.max(index, 0), state.image.num_slices - 1);
  $("slice").value = String(index);
  if (index === state.slice) return;
  const ticket = (state.sliceTicket = (state.sliceTicket || 0) + 1);
  loadSlice(index, ticket).catch((error) => setStatus(error.message, true));
}

$("slice").addEventListener("input", (event) => changeSlice(Number(event.target.value)));
for (const radio of document.querySelectorAll("input[name=tool]")) {
  radio.addEventListener("change", () => { state.tool = radio.value; });
}

function sliceCommand(name) {
  const image = state.image;
  if (!image) return;
  busy(name, async () => {
    const response = await api("POST", `/api/images/${image.id}/${name}`, { slice: state.slice });
    applyMask(await response.json());
    return `${name}: ${state.area} pixels`;
  });
}

function propagate() {
  const image = state.image;
  const index = state.slice;
  if (!image || image.num_slices <= 1) return;
  busy("propagating", async () => {
    const response = await api("POST", `/api/images/${image.id}/propagate`, { slice: index });
    const result = await response.json();
    if (state.image === image && state.slice === index) await loadSlice(index);
    const filled = result.filled;
    if (!filled.length) return "propagate: no neighbouring slice was filled";
    return `propagated to ${filled.length} slice(s), ${filled[0] + 1}–${filled[filled.length - 1] + 1}, ` +
      `in ${result.total_ms.toFixed(0)} ms (${result.ms_per_slice.toFixed(0)} ms a slice)`;
  });
}

$("undo").addEventListener("click", () => sliceCommand("undo"));
$("propagate").addEventListener("click", propagate);
$("reset").addEventListener("click", () => sliceCommand("reset"));
window.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") sliceCommand("undo");
});

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  busy("uploading", async () => {
    await showImage(await (await api("POST", "/api/images", form)).json());
    return `opened ${file.name} in {ms} ms`;
  });
});

$("open-path-button").addEventListener("click", () => {
  const path = $("open-path").value.trim();
  if (!path) return;
  busy("opening", async () => {
    await showImage(await (await api("POST", "/api/images/open", { path })).json());
    return `opened ${path} in {ms} ms`;
  });
});

$("download").addEventListener("click", () => {
  const image = state.image;
  if (!image) return;
  busy("saving", async () => {
    const blob = await (await api("GET", `/api/images/${image.id}/mask-file`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = image.mask_name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    return `downloaded ${image.mask_name}`;
  });
});

$("save-path-button").addEventListener("click", () => {
  const image = state.image;
  const path = $("save-path").value.trim();
  if (!image || !path) return;
  busy("saving", async () => {
    const result = await (await api("POST", `/api/images/${image.id}/save`, { path })).json();
    return `saved ${result.path}`;
  });
});

window.addEventListener("resize", () => { fitCanvas(); draw(); });

// An image opened when the server started (medseg interactive --image) shows at once.
busy("starting", async () => {
  const images = await (await api("GET", "/api/images")).json();
  if (!images.length) return "Open an image to start.";
  await showImage(images[images.length - 1]);
  return `opened ${images[images.length - 1].name}`;
});
