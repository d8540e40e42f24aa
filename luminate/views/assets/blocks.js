
(function () {
  function fmt(v) {
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 || a === 0 ? v.toFixed(2) : v.toExponential(1);
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }
  function hbar(label, v, vmax, signed) {
    var pct = vmax > 0 ? Math.min(100, 100 * Math.abs(v) / vmax) : 0;
    var span = signed ? '<span class="' + (v >= 0 ? 'pos' : 'neg') + '" style="width:' + (pct / 2).toFixed(1) + '%"></span>'
                      : '<span class="pos" style="width:' + Math.max(0, pct).toFixed(1) + '%"></span>';
    return '<div class="lm-hrow"><div>' + label + '</div><div class="lm-hbar' + (signed ? '' : ' plain') + '">' + span +
           '</div><div>' + fmt(v) + '</div></div>';
  }
  var R = {};
  R.dictionary = function (d, y, x) {
    var top = d.top[y][x], s = d.icon;
    var h = '<h3>' + esc(d.layer) + ' at row ' + y + ', column ' + x + ': the ' + top.length + ' strongest channels</h3><div class="lm-chans">';
    top.forEach(function (cv) {
      var c = cv[0], v = cv[1], bar = Math.max(2, Math.round(s * Math.max(0, v) / d.vmax));
      h += '<div class="lm-chan" data-channel="' + c + '" data-value="' + v + '"><div class="lm-vbarwrap" style="height:' + s + 'px">' +
           '<div class="lm-vbar" style="height:' + bar + 'px"></div></div>' +
           (d.icons[c] ? '<img src="' + d.icons[c] + '" width="' + s + '" height="' + s + '" alt="channel ' + c + '">' : '') +
           '<div>channel ' + c + '</div><div>' + fmt(v) + '</div></div>';
    });
    return h + '</div>';
  };
  R.grid = function (d, y, x) {
    var i = y * d.w + x;
    return '<h3>' + esc(d.layer) + ' at row ' + y + ', column ' + x + '</h3>' +
           '<img class="lm-icon lm-big" src="' + d.cells[i] + '" width="' + d.big + '" height="' + d.big + '" alt="cell">' +
           '<p class="muted">An image optimized to produce this position\'s activation vector (norm ' + fmt(d.norms[i]) + ').</p>';
  };
  R.attribution = function (d, y, x) {
    var v = d.values[y][x], h = '<h3>Attribution at row ' + y + ', column ' + x + ' of ' + esc(d.layer) + '</h3>';
    d.classes.forEach(function (c, k) { h += hbar(esc(c), v[k], d.vmax, true); });
    return h + '<p class="muted">Orange: this position raises the class logit; blue: it lowers it.</p>';
  };
  R.groups = function (d, y, x, w) {
    var g = w.dataset.group;
    if (w.dataset.focus === 'group' && g !== '' && g !== undefined) {
      g = +g;
      var h = '<h3>Group ' + g + ' of ' + esc(d.layer) + '</h3><div class="lm-chans"><img src="' + d.icons[g] +
              '" width="' + d.big + '" height="' + d.big + '" alt="group ' + g + '"></div><p></p>';
      d.classes.forEach(function (c, k) { h += hbar(esc(c), d.attributions[g][k], d.amax, true); });
      return h;
    }
    var here = d.spatial.map(function (s, gi) { return [gi, s[y][x]]; }).sort(function (a, b) { return b[1] - a[1]; });
    var h2 = '<h3>Groups at row ' + y + ', column ' + x + ' of ' + esc(d.layer) + '</h3>';
    here.forEach(function (p) {
      h2 += '<div class="lm-hrow" data-group="' + p[0] + '"><div><img src="' + d.icons[p[0]] + '" width="28" height="28" ' +
            'style="vertical-align:middle" alt=""> group ' + p[0] + '</div><div class="lm-hbar plain"><span class="pos" ' +
            'style="width:' + (100 * Math.min(1, p[1])).toFixed(1) + '%;background:#d62728"></span></div><div>' + fmt(p[1]) + '</div></div>';
    });
    return h2;
  };
  function setup(w) {
    var d = JSON.parse(document.getElementById(w.dataset.src).textContent);
    var detail = w.querySelector('.lm-detail');
    var overlay = w.querySelector('img.lm-overlay');
    var cur = d.start;
    function draw() {
      detail.innerHTML = R[w.dataset.kind](d, cur[0], cur[1], w);
      detail.dataset.cell = cur[0] + ',' + cur[1];
    }
    function select(y, x) {
      cur = [y, x];
      w.dataset.cell = y + ',' + x;
      w.querySelectorAll('.lm-cell.on').forEach(function (c) { c.classList.remove('on'); });
      w.querySelectorAll('.lm-cell[data-y="' + y + '"][data-x="' + x + '"]').forEach(function (c) { c.classList.add('on'); });
      w.dataset.focus = 'cell';
      draw();
    }
    function pick(key) {
      if (!overlay || !d.overlays || !(key in d.overlays)) return;
      overlay.src = d.overlays[key];
      w.dataset.overlay = key;
      w.querySelectorAll('.lm-pick').forEach(function (b) { b.classList.toggle('on', b.dataset.overlay === key); });
    }
    function group(g) {
      w.dataset.group = g;
      w.dataset.focus = 'group';
      w.querySelectorAll('.lm-group').forEach(function (c) { c.classList.toggle('on', c.dataset.g === String(g)); });
      if (overlay && d.masks) { overlay.src = d.masks[g]; }
      draw();
    }
    w.addEventListener('mouseover', function (e) {
      var c = e.target.closest('.lm-cell');
      if (c && w.contains(c)) { select(+c.dataset.y, +c.dataset.x); return; }
      var b = e.target.closest('.lm-pick');
      if (b && w.contains(b)) { pick(b.dataset.overlay); return; }
      var g = e.target.closest('.lm-group');
      if (g && w.contains(g)) { group(+g.dataset.g); }
    });
    w.addEventListener('click', function (e) {
      var b = e.target.closest('.lm-pick');
      if (b && w.contains(b)) pick(b.dataset.overlay);
    });
    if (d.overlays) pick(d.first);
    if (d.masks) { w.dataset.group = 0; w.querySelectorAll('.lm-group')[0].classList.add('on'); if (overlay) overlay.src = d.masks[0]; }
    select(d.start[0], d.start[1]);
  }
  document.querySelectorAll('.lm-widget').forEach(setup);
})();
