// The live toolbox page: photo or camera in, a layer's units out (see luminate/serve/app.py for the API).
// One frame at a time: the next camera frame is sent only when the previous answer is complete, so nothing queues.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), status = $("status"), layerSelect = $("layer"), sortSelect = $("sort");
  const state = { info: null, image: null, layer: null, frames: 0, peaks: null, unit: null, camera: null,
                  tiles: new Map(), visToken: 0, busy: false, pending: false };

  function say(text) { status.textContent = text; }

  async function json(url, options) {
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({}));
    if (!r.ok && r.status !== 202) throw new Error(body.detail || (body.error) || (url + " -> " + r.status));
    return { status: r.status, body };
  }

  // ----- inputs ---------------------------------------------------------------------------------------------
  async function upload(blob, name) {
    const form = new FormData();
    form.append("file", blob, name || "frame.jpg");
    const { body } = await json("/api/images", { method: "POST", body: form });
    return body.id;
  }

  async function usePhoto(file) {
    if (!file) return;
    await ready;
    stopCamera();
    say("uploading " + file.name + " ...");
    try {
      state.image = await upload(file, file.name);
      await update();
      say(file.name);
    } catch (e) { say(String(e.message || e)); }
  }

  $("file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { e.stopPropagation(); usePhoto(e.dataTransfer.files[0]); });
  document.body.addEventListener("dragover", (e) => e.preventDefault());
  document.body.addEventListener("drop", (e) => { e.preventDefault(); usePhoto(e.dataTransfer.files[0]); });

  // ----- camera: send a frame, wait for the whole answer, then send the next -----------------------------------
  const video = $("video"), camButton = $("camera");
  camButton.addEventListener("click", () => (state.camera ? stopCamera() : startCamera()));

  async function startCamera() {
    await ready;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { say("this browser has no camera access"); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      state.camera = stream;
      video.srcObject = stream;
      await video.play();
      camButton.textContent = "Stop camera"; camButton.classList.add("on");
      say("camera on");
      cameraLoop(stream);
    } catch (e) { say("camera: " + (e.message || e)); }
  }

  function stopCamera() {
    if (!state.camera) return;
    state.camera.getTracks().forEach((t) => t.stop());
    state.camera = null; video.srcObject = null;
    camButton.textContent = "Start camera"; camButton.classList.remove("on");
  }

  async function cameraLoop(stream) {
    const [h, w] = state.info.size;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    while (state.camera === stream) {
      if (video.readyState < 2) { await new Promise((r) => setTimeout(r, 50)); continue; }
      const vw = video.videoWidth, vh = video.videoHeight, side = Math.min(vw, vh);   // centre square
      ctx.drawImage(video, (vw - side) / 2, (vh - side) / 2, side, side, 0, 0, w, h);
      const blob = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.9));
      try {
        state.image = await upload(blob, "frame.jpg");
        await update();
      } catch (e) { say("frame: " + (e.message || e)); await new Promise((r) => setTimeout(r, 500)); }
    }
  }

  // ----- the grid ---------------------------------------------------------------------------------------------
  function buildGrid(channels) {
    grid.textContent = "";
    state.tiles = new Map();
    for (let c = 0; c < channels; c++) {
      const tile = document.createElement("div");
      tile.className = "tile"; tile.dataset.unit = String(c); tile.title = state.layer + ":" + c;
      tile.innerHTML = '<div class="map"></div><span class="label">' + c + '</span><div class="bar"></div>';
      tile.addEventListener("click", () => openUnit(c));
      grid.appendChild(tile);
      state.tiles.set(c, tile);
    }
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => resolve(url); im.onerror = () => reject(new Error("could not load " + url)); im.src = url;
    });
  }

  function sortTiles() {
    if (!state.peaks) return;
    const order = [...state.tiles.keys()];
    if (sortSelect.value === "activation") order.sort((a, b) => state.peaks[b] - state.peaks[a] || a - b);
    for (const c of order) grid.appendChild(state.tiles.get(c));
  }
  sortSelect.addEventListener("change", sortTiles);

  async function update() {
    // One answer per frame: activations (and their sprite), classes, the open unit's map. Later calls coalesce.
    if (state.busy) { state.pending = true; return; }
    state.busy = true;
    try {
      do {
        state.pending = false;
        await updateOnce();
      } while (state.pending);
    } finally { state.busy = false; }
  }

  async function updateOnce() {
    const image = state.image, layer = state.layer;
    if (!image) return;
    const q = "image=" + encodeURIComponent(image) + "&layer=" + encodeURIComponent(layer);
    const photo = "/api/images/" + encodeURIComponent(image) + ".png";
    const [acts, classes] = await Promise.all([json("/api/activations?" + q), json("/api/classes?image=" + image)]);
    const a = acts.body;
    if (state.tiles.size !== a.peaks.length) buildGrid(a.peaks.length);
    state.peaks = a.peaks;
    const top = Math.max(1e-9, ...a.peaks);
    const waits = [loadImage(photo)];
    if (a.sprite) waits.push(loadImage("/api/activations.png?" + q));
    await Promise.all(waits);
    for (const id of ["photo", "attr-photo", "where-photo"]) $(id).src = photo;
    const s = a.sprite;
    state.tiles.forEach((tile, c) => {
      const map = tile.firstChild;
      if (s) {
        const col = c % s.cols, row = Math.floor(c / s.cols);
        map.style.backgroundImage = "url(/api/activations.png?" + q + ")";
        map.style.backgroundSize = (s.cols * 100) + "% " + (s.rows * 100) + "%";
        map.style.backgroundPosition = (s.cols > 1 ? col / (s.cols - 1) * 100 : 0) + "% " +
                                       (s.rows > 1 ? row / (s.rows - 1) * 100 : 0) + "%";
      }
      tile.lastChild.style.width = Math.max(0, a.peaks[c] / top * 100) + "%";
      tile.dataset.peak = a.peaks[c].toFixed(3);
    });
    sortTiles();
    showClasses(classes.body.classes);
    if (state.unit !== null) await showWhere(state.unit);
    if ($("attr-class").value) await showAttribution();
    state.frames += 1;
    grid.dataset.frame = String(state.frames);
    const what = layer.startsWith("features:") ? " dictionary features (" : " units (";
    $("grid-title").textContent = layer + ": " + a.peaks.length + what + a.shape.join(" x ") + "), frame " + state.frames;
  }

  layerSelect.addEventListener("change", () => {
    state.layer = layerSelect.value; state.tiles = new Map(); state.peaks = null; closePanel(); update();
  });

  // ----- classes and attribution ----------------------------------------------------------------------------
  function showClasses(list) {
    const ol = $("classes"); ol.textContent = "";
    const select = $("attr-class"), chosen = select.value;
    select.textContent = "";
    select.appendChild(new Option("(choose)", ""));
    for (const c of list) {
      const li = document.createElement("li");
      li.innerHTML = '<span class="n"></span> <span class="p"></span>';
      li.firstChild.textContent = c.name; li.lastChild.textContent = (c.probability * 100).toFixed(1) + "%";
      ol.appendChild(li);
      select.appendChild(new Option(c.name, String(c.index)));
    }
    const circuitSelect = $("circuit-class"), circuitChosen = circuitSelect.value;
    circuitSelect.textContent = "";
    circuitSelect.appendChild(new Option("(top class)", ""));
    for (const c of list) circuitSelect.appendChild(new Option(c.name, c.name));
    if (circuitChosen && ![...circuitSelect.options].some((o) => o.value === circuitChosen)) circuitSelect.appendChild(new Option(circuitChosen, circuitChosen));
    circuitSelect.value = circuitChosen;
    if (chosen && ![...select.options].some((o) => o.value === chosen)) select.appendChild(new Option("class " + chosen, chosen));
    select.value = chosen;
  }

  async function showAttribution() {
    const target = $("attr-class").value;
    if (!state.image || !target) return;
    const { body } = await json("/api/attribution?image=" + state.image + "&target=" + encodeURIComponent(target));
    drawMap($("attr-map"), body.map, true);
    $("attr-note").textContent = body.class + ": " + body.method + " at " + body.layer;
  }
  $("attr-class").addEventListener("change", () => showAttribution().catch((e) => say(e.message)));

  function drawMap(canvas, map, signed) {
    // signed (attribution): positive orange, negative blue, transparent at zero. Unsigned (where a unit fires):
    // the photo darkened where the unit is quiet, left bright where it fires (visible on any photo).
    const h = map.length, w = map[0].length;
    let top = 1e-9;
    for (const row of map) for (const v of row) top = Math.max(top, signed ? Math.abs(v) : v);
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const v = map[y][x] / top, k = 4 * (y * w + x);
      if (signed) {
        const pos = v >= 0;
        img.data[k] = pos ? 255 : 30; img.data[k + 1] = pos ? 140 : 110; img.data[k + 2] = pos ? 0 : 255;
        img.data[k + 3] = Math.round(Math.min(1, Math.abs(v)) * 200);
      } else {
        img.data[k] = img.data[k + 1] = img.data[k + 2] = 0;
        img.data[k + 3] = Math.round((1 - Math.max(0, Math.min(1, v))) * 210);
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  // ----- the unit panel ---------------------------------------------------------------------------------------
  $("close").addEventListener("click", closePanel);
  function closePanel() {
    state.unit = null; $("panel").hidden = true;
    state.tiles.forEach((t) => t.classList.remove("selected"));
  }

  async function openUnit(c) {
    state.unit = c;
    state.tiles.forEach((t, k) => t.classList.toggle("selected", k === c));
    $("panel").hidden = false;
    $("panel-title").textContent = state.layer + " unit " + c;
    loadVis(state.layer, c);
    showWhere(c).catch((e) => say(e.message));
    showSite(state.layer, c).catch((e) => { $("site").textContent = e.message; });
  }

  async function loadVis(layer, unit) {
    const token = ++state.visToken;
    const vis = $("vis");
    vis.querySelectorAll("img.unit-vis").forEach((old) => old.remove());
    $("vis-bar").style.width = "0";
    $("vis-note").textContent = "feature visualization: asking ...";
    while (token === state.visToken) {
      const r = await fetch("/api/units/" + encodeURIComponent(layer) + "/" + unit + ".png");
      if (token !== state.visToken) return;
      if (r.status === 200) {
        const kind = r.headers.get("X-Luminate-Image") || "unguided";
        const img = document.createElement("img");
        img.className = "unit-vis"; img.alt = kind + " feature visualization of " + layer + ":" + unit;
        img.dataset.kind = kind;
        img.src = URL.createObjectURL(await r.blob());
        vis.insertBefore(img, vis.firstChild);
        $("vis-bar").style.width = "100%";
        $("vis-note").textContent = kind === "guided"
          ? "guided by its top photos (the Microscope site's image)"
          : "unguided feature visualization (render cache; no photos guide it)";
        if (kind === "guided") showShown(layer, unit, token).catch((e) => say(e.message));
        return;
      }
      const body = await r.json().catch(() => ({}));
      if (r.status === 429) {   // the render queue is full: wait as the server says, then ask again
        $("vis-note").textContent = "the render queue is full: waiting for a place";
        await new Promise((res) => setTimeout(res, 1000 * (Number(r.headers.get("Retry-After")) || 5)));
        continue;
      }
      if (r.status !== 202) { $("vis-note").textContent = "could not render: " + (body.error || body.detail || r.status); return; }
      $("vis-bar").style.width = Math.round(body.progress * 100) + "%";
      $("vis-note").textContent = "rendering in the background: " + Math.round(body.progress * 100) + "% (" + body.status + ")";
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  // the images the Microscope site's unit page shows, guided first, with their scores on held-out photos
  async function showShown(layer, unit, token) {
    const { body } = await json("/api/units/" + encodeURIComponent(layer) + "/" + unit + "/shown");
    if (token !== state.visToken) return;
    const fmt = (s) => s ? " (path score " + s.path_score.toFixed(2) + ", activation ratio " + s.ratio.toFixed(2) +
      (s.flagged ? ", flagged" : ", passes") + ", on held-out photos)" : "";
    const notes = [];
    for (const [k, shown] of body.images.entries()) {
      notes.push(shown.name + fmt(shown.scores));
      if (k === 0) continue;   // the first is the image already drawn
      const img = document.createElement("img");
      img.className = "unit-vis"; img.alt = shown.name + " feature visualization of " + layer + ":" + unit;
      img.dataset.kind = shown.name; img.src = shown.url;
      const images = $("vis").querySelectorAll("img.unit-vis");
      images[images.length - 1].after(img);
    }
    $("vis-note").textContent = notes.join("; ");
  }

  async function showWhere(c) {
    if (!state.image) { $("where-note").textContent = "choose a photo first"; return; }
    const { body } = await json("/api/activations?image=" + state.image + "&layer=" + encodeURIComponent(state.layer) + "&unit=" + c);
    if (!Array.isArray(body.map[0])) { $("where-note").textContent = "this layer has no positions"; return; }
    drawMap($("where-map"), body.map, false);
    const peak = state.peaks ? state.peaks[c] : NaN;
    $("where-note").textContent = "peak " + Number(peak).toFixed(3) + " (bright: where it fires; dark: quiet)";
  }

  async function showSite(layer, c) {
    const box = $("site");
    box.textContent = "";
    if (!state.info.site) { box.innerHTML = '<p class="note">Start with --site SITE for the Microscope\'s top dataset examples.</p>'; return; }
    if (!state.info.site.includes(layer)) { box.innerHTML = '<p class="note">The Microscope site has no layer ' + layer + ".</p>"; return; }
    const { body } = await json("/api/units/" + encodeURIComponent(layer) + "/" + c + "/examples");
    const h3 = document.createElement("h3"); h3.textContent = "Top dataset examples"; box.appendChild(h3);
    const wrap = document.createElement("div"); wrap.className = "examples"; box.appendChild(wrap);
    const [gh, gw] = body.grid;
    for (const ex of body.examples) {
      const fig = document.createElement("figure");
      fig.innerHTML = '<img alt=""><div class="box"></div><figcaption></figcaption>';
      fig.querySelector("img").src = ex.url;
      const b = fig.querySelector(".box");
      b.style.left = (ex.x / gw * 100) + "%"; b.style.top = (ex.y / gh * 88) + "px";
      b.style.width = (100 / gw) + "%"; b.style.height = (88 / gh) + "px";
      fig.querySelector("figcaption").textContent = ex.name + " " + ex.value.toFixed(2);
      wrap.appendChild(fig);
    }
    const t = document.createElement("table");
    for (const [k, v] of Object.entries(body.stats)) {
      const tr = t.insertRow(); tr.insertCell().textContent = k;
      tr.insertCell().textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v);
    }
    box.appendChild(t);
  }

  // ----- the circuit panel: GET /api/circuit (202 with progress while tracing), POST /api/circuit/intervene -----
  const circuit = { token: 0, graph: null, image: null, target: null, chosen: new Set(), els: new Map() };
  const cgraph = $("circuit-graph"), cedges = $("circuit-edges"), creadout = $("circuit-readout");

  function circuitNote(text) { $("circuit-note").textContent = text; }

  async function traceCircuit() {
    if (!state.image) { circuitNote("choose a photo first"); return; }
    const select = $("circuit-class");
    const target = select.value || (select.options.length > 1 ? select.options[1].value : "");
    if (!target) { circuitNote("no class to trace yet"); return; }
    const token = ++circuit.token, image = state.image;
    clearCircuit("tracing");
    const url = "/api/circuit?image=" + encodeURIComponent(image) + "&target=" + encodeURIComponent(target);
    while (token === circuit.token) {
      const { status, body } = await json(url);
      if (token !== circuit.token) return;
      if (status === 200) {
        showCircuit(body, image, target);
        return;
      }
      $("circuit-bar").style.width = Math.round(100 * (body.progress || 0)) + "%";
      circuitNote("tracing " + target + ": " + Math.round(100 * (body.progress || 0)) + "% (" + (body.stage || body.status) + ")");
      await new Promise((r) => setTimeout(r, 400));
    }
  }

  function clearCircuit(status) {
    circuit.graph = null; circuit.chosen = new Set(); circuit.els = new Map();
    cgraph.querySelectorAll(".ccol").forEach((c) => c.remove());
    cedges.innerHTML = ""; creadout.textContent = "";
    $("circuit-bar").style.width = "0";
    cgraph.dataset.status = status;
  }

  function nodeCell(n) {
    const el = document.createElement("div");
    el.dataset.id = n.id;
    if (n.kind === "input" || n.kind === "target") {
      el.className = "cnode fixed";
      el.textContent = n.kind === "input" ? "the photo" : circuit.graph.target + " " + circuit.graph.score.toFixed(2);
      return el;
    }
    el.className = "cnode " + (n.score >= 0 ? "pos" : "neg");
    el.title = n.id + ": score " + n.score.toFixed(3) + "; raises " + ((n.ablate && n.ablate.raises) || []).join(", ");
    el.innerHTML = '<div class="icon"></div><span></span>';
    el.lastChild.textContent = n.unit + " · " + (n.score >= 0 ? "+" : "") + n.score.toFixed(2);
    el.addEventListener("mouseenter", () => hoverNode(n));
    el.addEventListener("mouseleave", () => hoverNode(null));
    el.addEventListener("click", () => chooseNode(n.id));
    return el;
  }

  function showCircuit(graph, image, target) {
    clearCircuit("done");
    $("circuit-bar").style.width = "100%";
    circuit.graph = graph; circuit.image = image; circuit.target = target;
    for (const layer of graph.layers) {
      const col = document.createElement("div");
      col.className = "ccol"; col.dataset.layer = layer;
      const h = document.createElement("h3"); h.textContent = layer; col.appendChild(h);
      for (const n of graph.nodes.filter((m) => m.layer === layer)) {
        const el = nodeCell(n);
        circuit.els.set(n.id, el); col.appendChild(el);
      }
      cgraph.appendChild(col);
    }
    drawEdges();
    const deepest = graph.layers[graph.layers.length - 2], f = graph.faithfulness[deepest] || {};
    circuitNote(graph.target + " = " + graph.score.toFixed(2) + "; removing the " + f.kept + " kept units of " + deepest +
                " drops it by " + Number(f.kept_drop).toFixed(2) + " (as many random units: " + Number(f.random_drop).toFixed(2) + ")");
    showProbabilities(null);
    loadIcons(circuit.token, graph);
  }

  function drawEdges() {
    const graph = circuit.graph;
    cedges.innerHTML = "";
    if (!graph) return;
    cedges.setAttribute("width", cgraph.scrollWidth); cedges.setAttribute("height", cgraph.scrollHeight);
    const box = cgraph.getBoundingClientRect(), NS = cedges.namespaceURI;
    const top = Math.max(1e-12, ...graph.edges.map((e) => Math.abs(e.weight)));
    for (const e of graph.edges) {
      const a = circuit.els.get(e.source), b = circuit.els.get(e.target);
      if (!a || !b) continue;
      const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect(), s = Math.abs(e.weight) / top;
      const x1 = ra.right - box.left + cgraph.scrollLeft, y1 = ra.top + ra.height / 2 - box.top;
      const x2 = rb.left - box.left + cgraph.scrollLeft, y2 = rb.top + rb.height / 2 - box.top, m = (x1 + x2) / 2;
      const p = document.createElementNS(NS, "path");
      p.setAttribute("d", "M" + x1 + "," + y1 + " C" + m + "," + y1 + " " + m + "," + y2 + " " + x2 + "," + y2);
      p.setAttribute("fill", "none");
      p.setAttribute("stroke", e.weight >= 0 ? "#d0542b" : "#3b6fb6");
      p.setAttribute("stroke-width", (0.4 + 4 * s).toFixed(2));
      p.setAttribute("opacity", (0.15 + 0.55 * s).toFixed(2));
      p.dataset.source = e.source; p.dataset.target = e.target;
      cedges.appendChild(p);
    }
  }
  window.addEventListener("resize", drawEdges);
  cgraph.addEventListener("scroll", drawEdges);

  function hoverNode(n) {
    // where the unit fires on the photo, drawn over the photo like a unit's map; cleared when the pointer leaves
    const canvas = $("photo-map");
    if (!n || !n.map || circuit.image !== state.image) { canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height); }
    else drawMap(canvas, n.map, false);
    cedges.querySelectorAll("path").forEach((p) => p.classList.toggle("on", !!n && (p.dataset.source === n.id || p.dataset.target === n.id)));
  }

  async function chooseNode(id) {
    if (circuit.chosen.has(id)) circuit.chosen.delete(id); else circuit.chosen.add(id);
    circuit.els.forEach((el, key) => el.classList.toggle("chosen", circuit.chosen.has(key)));
    await intervene();
  }

  async function intervene() {
    if (!circuit.graph) return;
    if (!circuit.chosen.size) { showProbabilities(null); return; }
    const token = circuit.token, nodes = [...circuit.chosen], factor = Number($("circuit-mode").value);
    try {
      const { body } = await json("/api/circuit/intervene", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: circuit.image, target: circuit.target, nodes, factor }) });
      if (token === circuit.token && nodes.join() === [...circuit.chosen].join()) showProbabilities(body, nodes, factor);
    } catch (e) { circuitNote(String(e.message || e)); }
  }

  function showProbabilities(result, nodes, factor) {
    const graph = circuit.graph;
    creadout.textContent = "";
    if (!graph) return;
    const head = document.createElement("p");
    const b = document.createElement("b");
    if (result) {
      b.textContent = (factor === 0 ? "removed " : "x" + factor + " ") + nodes.join(", ");
      head.appendChild(b);
      head.appendChild(document.createTextNode(": " + graph.target + " " + result.score.toFixed(2) + " (was " +
                                               graph.score.toFixed(2) + ", drop " + result.drop.toFixed(2) + ")"));
    } else {
      b.textContent = "the photo as it is"; head.appendChild(b);
      head.appendChild(document.createTextNode(": " + graph.target + " " + graph.score.toFixed(2)));
    }
    creadout.appendChild(head);
    const probs = result ? result.probabilities : graph.probabilities;
    for (const [name, p] of Object.entries(probs)) {
      const row = document.createElement("div"); row.className = "prob";
      row.innerHTML = '<span class="name"></span><div class="bar"></div><span></span><span class="was"></span>';
      row.children[0].textContent = name; row.children[0].title = name;
      row.children[1].style.width = (100 * p).toFixed(1) + "px";
      row.children[2].textContent = (100 * p).toFixed(1) + "%";
      if (result && name in graph.probabilities) row.children[3].textContent = "(was " + (100 * graph.probabilities[name]).toFixed(1) + "%)";
      creadout.appendChild(row);
    }
    creadout.dataset.score = result ? result.score.toFixed(4) : graph.score.toFixed(4);
    creadout.dataset.live = result ? nodes.join(",") + "@" + factor : "";
  }

  async function loadIcons(token, graph) {
    // each unit's feature visualization from the render worker, one at a time (the queue stays short); a unit the
    // worker cannot render keeps its grey square
    for (const n of graph.nodes) {
      if (n.kind !== "unit") continue;
      const url = "/api/units/" + encodeURIComponent(n.layer) + "/" + n.unit + ".png";
      while (token === circuit.token) {
        const r = await fetch(url);
        if (token !== circuit.token) return;
        if (r.status === 200) {
          const img = document.createElement("img");
          img.alt = "feature visualization of " + n.id; img.src = URL.createObjectURL(await r.blob());
          const el = circuit.els.get(n.id);
          el.replaceChild(img, el.querySelector(".icon"));
          break;
        }
        if (r.status !== 202 && r.status !== 429) break;
        await new Promise((res) => setTimeout(res, r.status === 429 ? 2000 : 500));
      }
    }
  }

  $("circuit-trace").addEventListener("click", () => traceCircuit().catch((e) => { cgraph.dataset.status = "failed"; circuitNote(String(e.message || e)); }));
  $("circuit-mode").addEventListener("change", () => intervene());
  $("circuit-reset").addEventListener("click", () => {
    circuit.chosen = new Set(); circuit.els.forEach((el) => el.classList.remove("chosen")); showProbabilities(null);
  });

  // ----- start ------------------------------------------------------------------------------------------------
  async function init() {
    const { body } = await json("/api/info");
    state.info = body;
    for (const l of body.layers) {
      const label = l.name.startsWith("features:") ? "features of " + l.name.slice(9) : l.name;
      layerSelect.appendChild(new Option(label + " (" + l.channels + ")", l.name));
    }
    state.layer = body.default_layer;
    layerSelect.value = state.layer;
    say("model " + body.model + ", " + body.input + ": choose a photo or start the camera");
  }
  const ready = init().catch((e) => say("could not reach the server: " + (e.message || e)));
})();
