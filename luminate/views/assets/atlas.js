
(function () {
  const data = JSON.parse(document.getElementById("atlas-data").textContent);
  const viewport = document.getElementById("viewport"), stage = document.getElementById("stage");
  const detail = document.getElementById("detail"), hilite = document.getElementById("hilite");
  const side = data.grid * data.size;
  let k = 1, x = 0, y = 0;
  function apply() { stage.style.transform = "translate(" + x + "px," + y + "px) scale(" + k + ")";
                     viewport.dataset.zoom = k.toFixed(4); }
  function fit() {
    const w = viewport.clientWidth, h = viewport.clientHeight;
    k = Math.min(w / side, h / side); x = (w - side * k) / 2; y = (h - side * k) / 2; apply();
  }
  function zoomAt(px, py, factor) {
    const nk = Math.min(Math.max(k * factor, 0.05), 40);
    x = px - (px - x) * nk / k; y = py - (py - y) * nk / k; k = nk; apply();
  }
  function zoomCentre(factor) { zoomAt(viewport.clientWidth / 2, viewport.clientHeight / 2, factor); }
  viewport.addEventListener("wheel", function (e) {
    e.preventDefault();
    const r = viewport.getBoundingClientRect();
    zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomCentre(1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomCentre(0.8); });
  document.getElementById("zoom-fit").addEventListener("click", fit);
  document.addEventListener("keydown", function (e) {
    if (e.key === "+" || e.key === "=") zoomCentre(1.25);
    else if (e.key === "-" || e.key === "_") zoomCentre(0.8);
    else if (e.key === "0") fit();
  });
  let drag = null;
  viewport.addEventListener("pointerdown", function (e) {
    if (e.button !== 0 || e.target.closest(".zoom")) return;
    drag = { px: e.clientX, py: e.clientY, x: x, y: y, moved: false };
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    const dx = e.clientX - drag.px, dy = e.clientY - drag.py;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
    drag.moved = true; viewport.classList.add("dragging");
    x = drag.x + dx; y = drag.y + dy; apply();
  });
  window.addEventListener("pointerup", function () { drag = null; viewport.classList.remove("dragging"); });
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; }); }
  function show(idx) {
    const c = data.cells[idx];
    if (!c || detail.dataset.cell === String(idx)) return;
    const icon = stage.querySelector('img.icon[data-cell="' + idx + '"]');
    hilite.style.display = "block";
    hilite.style.left = (c.i * data.size) + "px"; hilite.style.top = ((data.grid - 1 - c.j) * data.size) + "px";
    hilite.style.width = hilite.style.height = data.size + "px";
    const top = c.top.length ? c.top[0][1] : 1;
    let html = (icon ? '<img class="icon-big" alt="icon" src="' + icon.src + '">' : "") +
      "<h2>Cell (" + c.i + ", " + c.j + ")</h2>" +
      '<p class="count"><span class="n">' + c.count + "</span> point" + (c.count === 1 ? "" : "s") + "</p>";
    html += "<h3>Top classes <span class=\"muted\">(" + esc(data.top_source) + ")</span></h3><ol class=\"top\">";
    if (!c.top.length) html += '<li class="muted">no class with positive attribution</li>';
    c.top.forEach(function (t) {
      html += '<li><span class="cls">' + esc(t[0]) + '</span> <span class="muted">' + t[1].toPrecision(3) +
        '</span><div class="bar" style="width:' + Math.max(4, 100 * t[1] / top).toFixed(0) + '%"></div></li>';
    });
    html += "</ol>";
    if (c.samples.length) {
      html += "<h3>Images that landed here</h3><div class=\"thumbs\">";
      c.samples.forEach(function (s) { html += '<img alt="' + esc(s[1]) + '" title="' + esc(s[1]) + '" src="' +
                                        s[0] + '">'; });
      html += "</div>";
    } else html += '<p class="muted">no sample images available</p>';
    detail.innerHTML = html;
    detail.dataset.cell = String(idx);
  }
  viewport.addEventListener("pointerover", function (e) {
    const t = e.target.closest ? e.target.closest("img.icon") : null;
    if (t && !drag) show(+t.dataset.cell);
  });
  viewport.addEventListener("click", function (e) {
    const t = e.target.closest ? e.target.closest("img.icon") : null;
    if (t) show(+t.dataset.cell);
  });
  window.addEventListener("resize", fit);
  fit();
  document.body.dataset.ready = "1";
})();
