(function () {
  const data = JSON.parse(document.getElementById("circuit-data").textContent);
  const graph = document.getElementById("graph"), svg = document.getElementById("edges");
  const nodes = {}; data.nodes.forEach(n => { nodes[n.id] = n; });
  const els = {}; graph.querySelectorAll(".node").forEach(el => { els[el.dataset.id] = el; });
  const maxW = Math.max(1e-12, ...data.edges.map(e => Math.abs(e.weight)));
  const NS = svg.namespaceURI;
  function draw() {
    svg.innerHTML = "";
    svg.setAttribute("width", graph.scrollWidth); svg.setAttribute("height", graph.scrollHeight);
    const box = graph.getBoundingClientRect();
    data.edges.forEach(e => {
      const a = els[e.source], b = els[e.target];
      if (!a || !b) return;
      const ra = a.getBoundingClientRect(), rb = b.getBoundingClientRect();
      const x1 = ra.right - box.left + graph.scrollLeft, y1 = ra.top + ra.height / 2 - box.top;
      const x2 = rb.left - box.left + graph.scrollLeft, y2 = rb.top + rb.height / 2 - box.top;
      const m = (x1 + x2) / 2, s = Math.abs(e.weight) / maxW;
      const p = document.createElementNS(NS, "path");
      p.setAttribute("d", `M${x1},${y1} C${m},${y1} ${m},${y2} ${x2},${y2}`);
      p.setAttribute("fill", "none");
      p.setAttribute("stroke", e.weight >= 0 ? "#d0542b" : "#3b6fb6");
      p.setAttribute("stroke-width", (0.4 + 4.5 * s).toFixed(2));
      p.setAttribute("opacity", (0.12 + 0.6 * s).toFixed(2));
      p.dataset.source = e.source; p.dataset.target = e.target;
      const t = document.createElementNS(NS, "title");
      t.textContent = `${e.source} → ${e.target}: ${e.weight.toFixed(3)}`; p.appendChild(t);
      svg.appendChild(p);
    });
  }
  const canvas = document.getElementById("heat"), ctx = canvas.getContext("2d");
  function heat(map) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!map) return;
    const h = map.length, w = map[0].length;
    const top = Math.max(1e-12, ...map.flat());
    const small = document.createElement("canvas"); small.width = w; small.height = h;
    const sc = small.getContext("2d"), img = sc.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      // the photo darkened where the node is quiet and left bright where it fires: visible on any photo (an
      // orange overlay vanished on an orange flower)
      const v = Math.max(0, map[y][x]) / top, k = 4 * (y * w + x);
      img.data[k] = img.data[k + 1] = img.data[k + 2] = 0; img.data[k + 3] = Math.round(215 * (1 - v));
    }
    sc.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  }
  function probs(result) {
    return Object.entries(result.probabilities).map(([name, p]) =>
      `<div class="prob"><span class="name" title="${name}">${name}</span><div class="bar" style="width:${(100 * p).toFixed(1)}px"></div>${(100 * p).toFixed(1)}%</div>`).join("");
  }
  const readout = document.getElementById("readout"), base = readout.innerHTML;
  function show(n) {
    if (!n || !n.ablate) { readout.innerHTML = base; return; }
    const link = n.link ? `<p><a href="${n.link}">its page</a></p>` : "";
    readout.innerHTML = `<b>${n.id}</b> (${n.kind}), score ${n.score.toFixed(3)}<br>raises most: ${(n.ablate.raises || []).join(", ")}` +
      `<p><b>removed</b>: ${data.target} ${n.ablate.score.toFixed(2)} (drop ${n.ablate.drop.toFixed(2)})</p>${probs(n.ablate)}` +
      `<p><b>× ${data.settings.amplify}</b>: ${data.target} ${n.amplify.score.toFixed(2)}</p>${probs(n.amplify)}${link}` +
      `<p class="muted">photo as is: ${data.target} ${data.score.toFixed(2)}</p>`;
  }
  let chosen = null;
  Object.entries(els).forEach(([id, el]) => {
    el.addEventListener("mouseenter", () => {
      heat(nodes[id] && nodes[id].map);
      graph.classList.add("focus");
      svg.querySelectorAll("path").forEach(p => p.classList.toggle("on", p.dataset.source === id || p.dataset.target === id));
    });
    el.addEventListener("mouseleave", () => { heat(null); graph.classList.remove("focus"); });
    el.addEventListener("click", () => {
      if (chosen) chosen.classList.remove("active");
      chosen = chosen === el ? null : el;
      if (chosen) chosen.classList.add("active");
      show(chosen ? nodes[id] : null);
    });
  });
  window.addEventListener("resize", draw);
  graph.addEventListener("scroll", draw);
  window.addEventListener("load", draw);
  draw();
})();
