// medseg interactive: the annotation page. Draws the image's planes with the page's own window/level and the
// structures' label map on canvases, and sends prompts and manual edits to the JSON API, which keeps every
// structure's masks and undo history per open image (so a reload finds them again).
// Coordinates are (row, col) pixels of a plane; the pixel centre of [r, c] is (r, c). A 3D volume (Z, Y, X) is
// shown as the model's slices (axis 0, "axial", (Y, X)), axis 1 ("coronal", (Z, X)) and axis 2 ("sagittal",
// (Z, Y)), each at the physical aspect of its spacing; the coronal and sagittal views put the last slice at the top
// (the head, for a scan whose slices run from feet to head).
"use strict";

const PALETTE = [[255, 70, 70], [62, 224, 122], [74, 163, 255], [255, 210, 62], [214, 94, 255], [255, 140, 40],
  [40, 230, 230], [255, 120, 190], [170, 220, 60]];

const state = {
  image: null,        // the server's image info: id, name, num_slices, slice_shape, spacing, labels, presets
  slice: 0,           // the axial slice (cursor[0])
  cursor: [0, 0, 0],  // (z, y, x) of a volume; (0, y, x) of a 2D image
  tool: "click",
  label: 1,
  labels: [],         // [{value, name}]
  window: null,       // {low, high}
  opacity: 0.45,
  zoom: 1,
  pan: [0, 0],
  planes: {},         // axis -> {index, shape [C, H, W], data Float32Array, labels Uint8Array}
  picture: null,      // the axial plane shown (set once it is drawn)
  prompts: [],
  drag: null,         // {start, points, positive, moved, mode}
  busy: false,
  interactions: 0,
  area: 0,
  lastLatencyMs: null,  // the last prompt or edit: mouse up -> overlay redrawn
  lastServerMs: null,   // the server's part of the last prompt (model and bookkeeping)
  lastStroke: null,     // the last brush or eraser stroke sent: {points, radius, kind}
};
window.medseg = state;  // for tests and the console

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const VIEWS = [canvas, $("view-coronal"), $("view-sagittal")];

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
  status.dataset.latency = state.lastLatencyMs === null ? "" : state.lastLatencyMs.toFixed(1);
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

function colourOf(value) {
  return PALETTE[(value - 1) % PALETTE.length];
}

// --- what the page remembers across a reload (the masks themselves live on the server) ----------------------

function remember() {
  if (!state.image) return;
  const view = { slice: state.slice, cursor: state.cursor, label: state.label, window: state.window,
    opacity: state.opacity, tool: state.tool };
  sessionStorage.setItem(`medseg:${state.image.id}`, JSON.stringify(view));
}

function recalled(info) {
  try {
    return JSON.parse(sessionStorage.getItem(`medseg:${info.id}`) || "null");
  } catch (error) {
    return null;
  }
}

// --- opening images, planes and labels ---------------------------------------------------------------------

async function showImage(info) {
  state.image = info;
  state.planes = {};
  const volume = info.ndim === 3;
  const [height, width] = info.slice_shape;
  state.cursor = volume ? [Math.floor(info.num_slices / 2), Math.floor(height / 2), Math.floor(width / 2)]
    : [0, Math.floor(height / 2), Math.floor(width / 2)];
  state.labels = info.labels;
  state.label = info.labels.length ? info.labels[0].value : 1;
  state.window = { low: info.presets[0].low, high: info.presets[0].high };
  const previous = recalled(info);
  if (previous) {
    state.cursor = previous.cursor;
    state.label = previous.label;
    state.window = previous.window;
    state.opacity = previous.opacity;
    setTool(previous.tool);
  }
  state.slice = state.cursor[0];
  $("opacity").value = String(Math.round(state.opacity * 100));
  $("image-name").textContent = `${info.name} — ${info.spatial_shape.join("×")}, ${info.channels} channel(s)`;
  $("slices").hidden = info.num_slices <= 1;
  $("side-views").hidden = !volume;
  $("propagate").disabled = info.num_slices <= 1;
  $("close-image").disabled = false;
  $("slice").max = String(info.num_slices - 1);
  $("slice").value = String(state.slice);
  const preset = $("preset");
  preset.innerHTML = "";
  info.presets.forEach((p, i) => preset.add(new Option(`${p.name}`, String(i))));
  renderLabels();
  resetZoom();
  await loadSlice(state.slice);
  if (volume) await Promise.all([loadPlane(1, state.cursor[1]), loadPlane(2, state.cursor[2])]);
  fitViews();
  drawAll();
}

async function fetchPlane(axis, index) {
  const id = state.image.id;
  const [data, labels] = await Promise.all([
    api("GET", `/api/images/${id}/planes/${axis}/${index}/data`),
    api("GET", `/api/images/${id}/planes/${axis}/${index}/labels`),
  ]);
  const shape = data.headers.get("x-shape").split(",").map(Number);
  return { index, shape, data: new Float32Array(await data.arrayBuffer()),
    labels: new Uint8Array(await labels.arrayBuffer()) };
}

async function loadPlane(axis, index) {
  const image = state.image;
  const plane = await fetchPlane(axis, index);
  if (state.image !== image) return;
  state.planes[axis] = plane;
  const view = VIEWS[axis];
  if (view.width !== plane.shape[2] || view.height !== plane.shape[1]) {
    view.width = plane.shape[2];
    view.height = plane.shape[1];
    fitViews();
  }
  drawView(axis);
}

async function refreshLabels(axes) {
  const image = state.image;
  await Promise.all(axes.filter((axis) => state.planes[axis]).map(async (axis) => {
    const index = state.planes[axis].index;
    const response = await api("GET", `/api/images/${image.id}/planes/${axis}/${index}/labels`);
    const labels = new Uint8Array(await response.arrayBuffer());
    if (state.image !== image || !state.planes[axis] || state.planes[axis].index !== index) return;
    state.planes[axis].labels = labels;
    drawView(axis);
  }));
}

async function loadSlice(index, ticket) {
  const image = state.image;
  const [plane, maskResponse] = await Promise.all([
    fetchPlane(0, index),
    api("GET", `/api/images/${image.id}/slices/${index}/mask?label=${state.label}`),
  ]);
  const mask = await maskResponse.json();
  if (state.image !== image || (ticket !== undefined && ticket !== state.sliceTicket)) return;
  state.slice = index;
  state.cursor[0] = index;
  state.planes[0] = plane;
  if (canvas.width !== plane.shape[2] || canvas.height !== plane.shape[1]) {
    canvas.width = plane.shape[2];
    canvas.height = plane.shape[1];
    fitViews();
  }
  state.picture = plane;
  applyState(mask);
  $("slice-label").textContent = `slice ${index + 1} / ${image.num_slices}`;
  remember();
}

function applyState(result) {
  state.prompts = result.prompts;
  state.area = result.area;
  drawAll();
}

// --- geometry: each view at the physical aspect of its plane --------------------------------------------------

function planeSpacing(axis) {
  const spacing = state.image.spacing;
  if (state.image.ndim === 2) return [spacing[0], spacing[1]];
  return axis === 0 ? [spacing[1], spacing[2]] : axis === 1 ? [spacing[0], spacing[2]] : [spacing[0], spacing[1]];
}

function fitViews() {
  if (!state.image) return;
  VIEWS.forEach((view, axis) => {
    if (axis > 0 && state.image.ndim !== 3) return;
    const box = view.parentElement;
    const [rowSpacing, colSpacing] = planeSpacing(axis);
    const physical = [view.height * rowSpacing, view.width * colSpacing];  // mm: height, width
    const scale = Math.max(1e-6, Math.min(box.clientWidth / physical[1], box.clientHeight / physical[0]));
    view.style.width = `${(physical[1] * scale).toFixed(2)}px`;
    view.style.height = `${(physical[0] * scale).toFixed(2)}px`;
  });
  applyZoom();
}

function applyZoom() {
  canvas.style.transform = `translate(${state.pan[0]}px, ${state.pan[1]}px) scale(${state.zoom})`;
}

function resetZoom() {
  state.zoom = 1;
  state.pan = [0, 0];
  applyZoom();
}

// --- drawing ---------------------------------------------------------------------------------------------

function windowed(value) {
  const { low, high } = state.window;
  const scaled = (value - low) / Math.max(high - low, 1e-8);
  return Math.round(Math.min(Math.max(scaled, 0), 1) * 255);
}

function drawAll() {
  for (let axis = 0; axis < 3; axis++) drawView(axis);
  const { low, high } = state.window || { low: 0, high: 0 };
  $("window-label").textContent = state.image ? `window ${low.toFixed(1)} … ${high.toFixed(1)}` : "";
}

function drawView(axis) {
  const plane = state.planes[axis];
  const view = VIEWS[axis];
  if (!plane || !state.image || (axis > 0 && state.image.ndim !== 3)) return;
  const [channels, height, width] = plane.shape;
  const context = view.getContext("2d");
  const pixels = context.createImageData(width, height);
  const out = pixels.data;
  const size = height * width;
  const alpha = state.opacity;
  const colours = {};  // label value -> [r, g, b]
  const flip = axis > 0;  // plane row z is drawn at height - 1 - z
  for (let i = 0; i < size; i++) {
    const grey = windowed(plane.data[i]);
    let r = grey;
    let g = channels === 3 ? windowed(plane.data[size + i]) : grey;
    let b = channels === 3 ? windowed(plane.data[2 * size + i]) : grey;
    const value = plane.labels[i];
    if (value) {
      const colour = colours[value] || (colours[value] = colourOf(value));
      r = Math.round(r * (1 - alpha) + colour[0] * alpha);
      g = Math.round(g * (1 - alpha) + colour[1] * alpha);
      b = Math.round(b * (1 - alpha) + colour[2] * alpha);
    }
    const o = (flip ? (height - 1 - Math.floor(i / width)) * width + (i % width) : i) * 4;
    out[o] = r;
    out[o + 1] = g;
    out[o + 2] = b;
    out[o + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  const unit = Math.max(1, view.width / Math.max(1, view.clientWidth));  // one screen pixel in plane pixels
  if (state.image.ndim === 3 && axis > 0) drawCrosshair(context, axis, unit);
  if (axis === 0) {
    for (const prompt of state.prompts) drawPrompt(context, prompt, unit);
    if (state.drag && state.drag.moved && state.drag.mode === "prompt") {
      drawPrompt(context, dragPrompt(state.drag), unit);
    }
  }
}

function drawCrosshair(context, axis, unit) {
  // axis 1 (Z, X): rows at z, columns at x; axis 2 (Z, Y): rows at z, columns at y
  const row = context.canvas.height - 1 - state.cursor[0];  // drawn flipped: see drawView
  const col = axis === 1 ? state.cursor[2] : state.cursor[1];
  context.strokeStyle = "rgba(255, 230, 90, 0.8)";
  context.lineWidth = unit;
  context.beginPath();
  context.moveTo(0, row + 0.5);
  context.lineTo(context.canvas.width, row + 0.5);
  context.moveTo(col + 0.5, 0);
  context.lineTo(col + 0.5, context.canvas.height);
  context.stroke();
}

function promptColour(positive) {
  return positive ? "#3ee07a" : "#4aa3ff";
}

function drawPrompt(context, prompt, unit) {
  context.lineWidth = 2 * unit;
  if (prompt.type === "click") {
    context.fillStyle = promptColour(prompt.positive);
    context.beginPath();
    context.arc(prompt.point[1] + 0.5, prompt.point[0] + 0.5, 4 * unit, 0, 2 * Math.PI);
    context.fill();
  } else if (prompt.type === "box") {
    context.strokeStyle = "#ffd23e";
    const [r0, c0] = prompt.start;
    const [r1, c1] = prompt.stop;
    context.strokeRect(Math.min(c0, c1), Math.min(r0, r1), Math.abs(c1 - c0) + 1, Math.abs(r1 - r0) + 1);
  } else {
    context.strokeStyle = prompt.type === "stroke" ? "rgba(255, 255, 255, 0.6)" : promptColour(prompt.positive);
    context.lineWidth = prompt.type === "stroke" ? Math.max(1, 2 * prompt.radius) : 2 * unit;
    context.lineCap = "round";
    context.beginPath();
    prompt.points.forEach(([r, c], i) => (i ? context.lineTo(c + 0.5, r + 0.5) : context.moveTo(c + 0.5, r + 0.5)));
    context.stroke();
  }
}

// --- labels ----------------------------------------------------------------------------------------------

function renderLabels() {
  const list = $("labels");
  list.innerHTML = "";
  state.labels.forEach((entry, i) => {
    const item = document.createElement("li");
    item.dataset.value = String(entry.value);
    item.classList.toggle("active", entry.value === state.label);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOf(entry.value).join(",")})`;
    const name = document.createElement("span");
    name.textContent = `${i < 9 ? i + 1 + " · " : ""}${entry.name} (${entry.value})`;
    item.append(swatch, name);
    item.addEventListener("click", () => selectLabel(entry.value));
    list.appendChild(item);
  });
}

function selectLabel(value) {
  if (!state.image || value === state.label) return;
  state.label = value;
  renderLabels();
  remember();
  loadSlice(state.slice).catch((error) => setStatus(error.message, true));
}

async function addLabel(name) {
  const image = state.image;
  if (!image || !name) return;
  const used = new Set(state.labels.map((entry) => entry.value));
  let value = 1;
  while (used.has(value)) value += 1;
  await busy("adding a structure", async () => {
    state.labels = await (await api("POST", `/api/images/${image.id}/labels`, { value, name })).json();
    state.label = value;
    renderLabels();
    await loadSlice(state.slice);
    return `structure ${value}: ${name}`;
  });
}

// --- interactions ----------------------------------------------------------------------------------------

function pixelOf(event, view) {
  const rect = view.getBoundingClientRect();
  const col = ((event.clientX - rect.left) * view.width) / rect.width - 0.5;
  const row = ((event.clientY - rect.top) * view.height) / rect.height - 0.5;
  const clamp = (value, size) => Math.min(Math.max(value, 0), size - 1);
  return [clamp(row, view.height), clamp(col, view.width)];
}

function dragPrompt(drag) {
  if (state.tool === "box") return { type: "box", start: drag.start, stop: drag.points[drag.points.length - 1] };
  if (state.tool === "scribble") return { type: "scribble", positive: drag.positive, points: drag.points };
  if (state.tool === "paint" || state.tool === "erase") {
    return { type: "stroke", points: drag.points, radius: brushRadius() };
  }
  return { type: "click", positive: drag.positive, point: drag.start };
}

function brushRadius() {
  return Math.max(0, Number($("brush-size").value) || 0);
}

function finished(started, result) {
  state.interactions += 1;
  applyState(result);
  state.lastLatencyMs = performance.now() - started;  // mouse up -> the axial overlay redrawn
  state.lastServerMs = result.total_ms === undefined ? null : result.total_ms;  // of which the server's work
}

async function changeMask(label, path, body, describe) {
  const image = state.image;
  const index = state.slice;
  const started = performance.now();
  await busy(label, async () => {
    const response = await api("POST", `/api/images/${image.id}/${path}`, { ...body, slice: index, label: state.label });
    const result = await response.json();
    if (state.image !== image || state.slice !== index) return undefined;
    await refreshLabels([0]);
    finished(started, result);
    state.cursor[0] = index;
    refreshLabels([1, 2]).catch((error) => setStatus(error.message, true));
    return describe(result).replace("{latency}", state.lastLatencyMs.toFixed(0));
  });
}

function send(prompt) {
  if (prompt.type === "stroke") {
    const kind = state.tool === "erase" ? "erase" : "paint";
    state.lastStroke = { points: prompt.points, radius: prompt.radius, kind };
    return changeMask(kind, "edit", { kind, points: prompt.points, radius: prompt.radius },
      (r) => `${kind}: ${r.area} pixels · {latency} ms`);
  }
  return changeMask("segmenting", "prompts", prompt, (result) =>
    `${result.area} pixels · model ${result.predict_ms.toFixed(0)} ms · server ${result.total_ms.toFixed(0)}` +
    " ms · prompt to overlay {latency} ms");
}

function edit(kind) {
  if (!state.image) return Promise.resolve();
  return changeMask(kind.replace("_", " "), "edit", { kind }, (r) => `${kind.replace("_", " ")}: ${r.area} pixels`);
}

function sliceCommand(name) {
  if (!state.image) return Promise.resolve();
  return changeMask(name, name, {}, (r) => `${name}: ${r.area} pixels`);
}

function setWindow(low, high) {
  state.window = { low, high };
  drawAll();
  remember();
}

function setTool(tool) {
  state.tool = tool;
  const radio = document.querySelector(`input[name=tool][value=${tool}]`);
  if (radio) radio.checked = true;
}

canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!state.image || state.busy) return;
  event.preventDefault();
  const point = pixelOf(event, canvas);
  let mode = "prompt";
  if (event.button === 1 || state.tool === "pan") mode = "pan";
  else if (event.ctrlKey || state.tool === "window") mode = "window";
  state.drag = { start: point, points: [point], positive: event.button === 0 && !event.shiftKey, moved: false,
    mode, screen: [event.clientX, event.clientY], window: { ...state.window }, pan: [...state.pan] };
});
window.addEventListener("mousemove", (event) => {
  const drag = state.drag;
  if (!drag) return;
  const dx = event.clientX - drag.screen[0];
  const dy = event.clientY - drag.screen[1];
  if (drag.mode === "pan") {
    state.pan = [drag.pan[0] + dx, drag.pan[1] + dy];
    drag.moved = true;
    applyZoom();
    return;
  }
  if (drag.mode === "window") {  // left/right: width, up/down: level (drag up: brighter)
    const width0 = drag.window.high - drag.window.low;
    const width = Math.max(1e-6, width0 * Math.exp(dx / 200));
    const level = (drag.window.high + drag.window.low) / 2 + (dy / 200) * width0;
    drag.moved = true;
    setWindow(level - width / 2, level + width / 2);
    return;
  }
  const point = pixelOf(event, canvas);
  const last = drag.points[drag.points.length - 1];
  if (Math.hypot(point[0] - last[0], point[1] - last[1]) * (canvas.clientWidth / canvas.width) < 2) return;
  drag.points.push(point);
  drag.moved = true;
  drawView(0);
});
window.addEventListener("mouseup", (event) => {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  if (drag.mode !== "prompt") return;
  if (event.target === canvas) drag.points.push(pixelOf(event, canvas));
  const needsDrag = state.tool === "box" || state.tool === "scribble";
  if (needsDrag && !drag.moved) {
    drawView(0);
    return;  // a box or scribble needs a drag
  }
  const prompt = dragPrompt(drag);
  const point = drag.points[drag.points.length - 1];
  state.cursor[1] = Math.round(point[0]);
  state.cursor[2] = Math.round(point[1]);
  drawView(0);
  send(prompt);
});
canvas.addEventListener("wheel", (event) => {
  if (!state.image) return;
  event.preventDefault();
  if (event.ctrlKey) {
    state.zoom = Math.min(16, Math.max(0.25, state.zoom * (event.deltaY > 0 ? 1 / 1.15 : 1.15)));
    applyZoom();
    return;
  }
  if (state.image.num_slices > 1) changeSlice(state.slice + (event.deltaY > 0 ? 1 : -1));
}, { passive: false });

// a click in the coronal or sagittal view moves the crosshair (and the axial slice) there
[1, 2].forEach((axis) => {
  VIEWS[axis].addEventListener("mousedown", (event) => {
    if (!state.image || state.image.ndim !== 3) return;
    const [shown, col] = pixelOf(event, VIEWS[axis]).map(Math.round);
    state.cursor[axis === 1 ? 2 : 1] = col;
    goTo(VIEWS[axis].height - 1 - shown, axis);  // drawn flipped: see drawView
  });
});

async function goTo(slice, fromAxis) {
  const other = fromAxis === 1 ? 2 : 1;
  await Promise.all([changeSlice(slice), loadPlane(other, state.cursor[other])]);
  drawAll();
}

function changeSlice(index) {
  if (!state.image) return Promise.resolve();
  index = Math.min(Math.max(index, 0), state.image.num_slices - 1);
  $("slice").value = String(index);
  if (index === state.slice) return Promise.resolve();
  state.cursor[0] = index;
  const ticket = (state.sliceTicket = (state.sliceTicket || 0) + 1);
  return loadSlice(index, ticket).then(() => drawAll()).catch((error) => setStatus(error.message, true));
}

$("slice").addEventListener("input", (event) => changeSlice(Number(event.target.value)));
for (const radio of document.querySelectorAll("input[name=tool]")) {
  radio.addEventListener("change", () => { state.tool = radio.value; remember(); });
}
$("preset").addEventListener("change", (event) => {
  const preset = state.image.presets[Number(event.target.value)];
  setWindow(preset.low, preset.high);
});
$("opacity").addEventListener("input", (event) => {
  state.opacity = Number(event.target.value) / 100;
  drawAll();
  remember();
});

function propagate() {
  const image = state.image;
  const index = state.slice;
  if (!image || image.num_slices <= 1) return;
  busy("propagating", async () => {
    const body = { slice: index, label: state.label };
    const result = await (await api("POST", `/api/images/${image.id}/propagate`, body)).json();
    if (state.image === image && state.slice === index) await loadSlice(index);
    await refreshLabels([1, 2]);
    const filled = result.filled;
    if (!filled.length) return "propagate: no neighbouring slice was filled";
    return `propagated to ${filled.length} slice(s), ${filled[0] + 1}–${filled[filled.length - 1] + 1}, ` +
      `in ${result.total_ms.toFixed(0)} ms (${result.ms_per_slice.toFixed(0)} ms a slice)`;
  });
}

function fillFromExamples() {
  const image = state.image;
  if (!image) return;
  busy("filling from examples", async () => {
    const body = { label: state.label };
    const result = await (await api("POST", `/api/images/${image.id}/examples`, body)).json();
    if (state.image === image) await loadSlice(state.slice);
    await refreshLabels([0, 1, 2]);
    const filled = result.filled;
    if (!filled.length) return `examples (${result.examples}): nothing was filled`;
    return `filled ${filled.length} slice(s) from ${result.examples} example(s) in ${result.total_ms.toFixed(0)} ms`;
  });
}

function download() {
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
}

function saveToPath() {
  const image = state.image;
  const path = $("save-path").value.trim();
  if (!image || !path) return false;
  busy("saving", async () => {
    const result = await (await api("POST", `/api/images/${image.id}/save`, { path })).json();
    return `saved ${result.path}`;
  });
  return true;
}

$("undo").addEventListener("click", () => sliceCommand("undo"));
$("redo").addEventListener("click", () => sliceCommand("redo"));
$("fill-holes").addEventListener("click", () => edit("fill_holes"));
$("largest-component").addEventListener("click", () => edit("largest_component"));
$("propagate").addEventListener("click", propagate);
$("examples").addEventListener("click", fillFromExamples);
$("reset").addEventListener("click", () => sliceCommand("reset"));
$("zoom-reset").addEventListener("click", resetZoom);
$("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("add-label").addEventListener("click", () => {
  addLabel($("new-label").value.trim());
  $("new-label").value = "";
});
$("close-image").addEventListener("click", () => {
  const image = state.image;
  if (!image) return;
  busy("closing", async () => {
    await api("DELETE", `/api/images/${image.id}`);
    sessionStorage.removeItem(`medseg:${image.id}`);
    window.location.reload();
    return `closed ${image.name}`;
  });
});

const TOOL_KEYS = { c: "click", b: "box", s: "scribble", p: "paint", e: "erase", w: "window", m: "pan" };
window.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLInputElement && ["text", "number"].includes(target.type));
  if (typing) return;  // keys typed into a field (the brush size, a path, a name) are not shortcuts
  const key = event.key.toLowerCase();
  const command = event.ctrlKey || event.metaKey;
  if (command && key === "z") {
    event.preventDefault();
    sliceCommand(event.shiftKey ? "redo" : "undo");
  } else if (command && key === "y") {
    event.preventDefault();
    sliceCommand("redo");
  } else if (command && key === "s") {
    event.preventDefault();
    if (!saveToPath()) download();
  } else if (command) {
    return;
  } else if (TOOL_KEYS[key]) {
    setTool(TOOL_KEYS[key]);
    remember();
  } else if (/^[1-9]$/.test(key) && state.labels[Number(key) - 1]) {
    selectLabel(state.labels[Number(key) - 1].value);
  } else if (key === "arrowup" || key === "pageup") {
    event.preventDefault();
    changeSlice(state.slice - 1);
  } else if (key === "arrowdown" || key === "pagedown") {
    event.preventDefault();
    changeSlice(state.slice + 1);
  } else if (key === "t") {
    propagate();
  } else if (key === "x") {
    fillFromExamples();
  } else if (key === "f") {
    edit("fill_holes");
  } else if (key === "l") {
    edit("largest_component");
  } else if (key === "[" || key === "]") {
    const size = $("brush-size");
    size.value = String(Math.max(0, Math.min(64, Number(size.value) + (key === "]" ? 1 : -1))));
  } else if (key === "r") {
    resetZoom();
  } else if (key === "?") {
    $("help").hidden = !$("help").hidden;
  }
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

$("download").addEventListener("click", download);
$("save-path-button").addEventListener("click", saveToPath);
window.addEventListener("resize", () => { fitViews(); drawAll(); });

// The newest open image (medseg interactive --image, or the one this page had before a reload) shows at once,
// with its masks, structures and undo history as the server kept them.
busy("starting", async () => {
  const images = await (await api("GET", "/api/images")).json();
  if (!images.length) return "Open an image to start.";
  await showImage(images[images.length - 1]);
  return `opened ${images[images.length - 1].name}`;
});
