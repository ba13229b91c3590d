// The interactive 3-D scatter page (see scatter3d_html.h). The data travel as JSON in a
// <script type="application/json"> block; the renderer is the inline script kPageScript.
#include "lab/plots/scatter3d_html.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace glmlab::lab {

namespace {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// JSON that is safe inside <script>: "</" and "<!--" cannot occur (a '<' is written as \u003c).
std::string script_safe_json(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  for (char c : s) out += c == '<' ? std::string("\\u003c") : std::string(1, c);
  return out;
}

constexpr const char* kStyle = R"CSS(
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: #666; margin: 0 0 10px; font-size: 12px; }
#wrap { position: relative; max-width: 1100px; }
canvas { width: 100%; height: 640px; border: 1px solid #ddd; cursor: grab; display: block; touch-action: none; }
canvas.drag { cursor: grabbing; }
#tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.95); border: 1px solid #999;
       padding: 4px 7px; font-size: 12px; display: none; white-space: nowrap; box-shadow: 1px 1px 4px #aaa; }
#legend { margin: 8px 0; display: flex; flex-wrap: wrap; gap: 14px; }
#legend span { cursor: pointer; user-select: none; }
#legend span.off { opacity: 0.35; text-decoration: line-through; }
#legend i { display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px;
            border: 1px solid #333; }
button { margin-right: 6px; }
.help { color: #666; font-size: 12px; }
#error { color: #b00; }
)CSS";

constexpr const char* kPageScript = R"JS(
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('data').textContent);
  var cv = document.getElementById('c'), ctx = cv.getContext('2d'), tip = document.getElementById('tip');
  var hidden = {}, view, W = 0, H = 0, projected = [], firstDraw = true;

  function niceStep(range, n) {
    var raw = range / n, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
  }
  // Axis ranges start at 0 and end at a round number above the largest value.
  var axes = [0, 1, 2].map(function (k) {
    var mx = 0;
    D.points.forEach(function (p) { mx = Math.max(mx, p[k + 1]); });
    if (!(mx > 0)) mx = 1;
    var step = niceStep(mx, 5), n = Math.ceil(mx / step - 1e-9), ticks = [];
    for (var i = 0; i <= n; i++) ticks.push(i * step);
    var decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) + (step / Math.pow(10, Math.floor(Math.log10(step))) === 2.5 ? 1 : 0);
    return { max: n * step, ticks: ticks, decimals: decimals, title: D.axes[k] };
  });
  function fmt(v) {
    if (v === 0) return '0';
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
  }
  // Data (x, y, z) -> world: x -> X (right), z -> Y (up), y -> -Z (away from the front view), each in
  // [-1, 1]; a right-handed frame whose origin corner (0, 0, 0) is world (-1, -1, 1).
  function world(x, y, z) {
    return [2 * x / axes[0].max - 1, 2 * z / axes[2].max - 1, 1 - 2 * y / axes[1].max];
  }
  function reset() {
    view = { yaw: 0.62, pitch: 0.38, zoom: 1 };
    // A view in the address, e.g. scatter3d.html#yaw=1.2&pitch=0.2&zoom=1.5 (shareable, testable).
    (location.hash || '').replace(/^#/, '').split('&').forEach(function (kv) {
      var p = kv.split('='), v = parseFloat(p[1]);
      if (p.length === 2 && isFinite(v) && (p[0] === 'yaw' || p[0] === 'pitch' || p[0] === 'zoom')) view[p[0]] = v;
    });
  }
  function project(w) {
    var cy = Math.cos(view.yaw), sy = Math.sin(view.yaw), cp = Math.cos(view.pitch), sp = Math.sin(view.pitch);
    var x1 = w[0] * cy - w[2] * sy, z1 = w[0] * sy + w[2] * cy;
    var y2 = w[1] * cp - z1 * sp, z2 = w[1] * sp + z1 * cp;
    var dist = 5, f = 0.27 * Math.min(W, H) * dist * view.zoom, s = f / (dist - z2);
    return { x: W / 2 + x1 * s, y: 0.46 * H - y2 * s, depth: z2, scale: s / (f / dist) };
  }
  function line(a, b, colour, width) {
    var p = project(a), q = project(b);
    ctx.strokeStyle = colour; ctx.lineWidth = width || 1;
    ctx.beginPath(); ctx.moveTo(p.x, p.y); ctx.lineTo(q.x, q.y); ctx.stroke();
  }
  function text(w, s, colour, align, dx, dy, font) {
    var p = project(w);
    ctx.fillStyle = colour; ctx.font = font || '11px sans-serif'; ctx.textAlign = align || 'center';
    ctx.textBaseline = 'middle'; ctx.fillText(s, p.x + (dx || 0), p.y + (dy || 0));
  }
  function marker(x, y, r, shape, colour) {
    ctx.beginPath();
    if (shape === 1) ctx.rect(x - r, y - r, 2 * r, 2 * r);
    else if (shape === 2) { ctx.moveTo(x, y - 1.2 * r); ctx.lineTo(x + 1.1 * r, y + 0.8 * r); ctx.lineTo(x - 1.1 * r, y + 0.8 * r); ctx.closePath(); }
    else if (shape === 3) { ctx.moveTo(x, y - 1.3 * r); ctx.lineTo(x + 1.3 * r, y); ctx.lineTo(x, y + 1.3 * r); ctx.lineTo(x - 1.3 * r, y); ctx.closePath(); }
    else ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = colour; ctx.fill();
    ctx.strokeStyle = 'rgba(0,0,0,0.6)'; ctx.lineWidth = 0.8; ctx.stroke();
  }
  function draw() {
    var dpr = window.devicePixelRatio || 1, rect = cv.getBoundingClientRect();
    W = Math.max(200, rect.width); H = Math.max(200, rect.height);
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
    // Floor grid (z = 0) and the two back walls (x = 0 side, y = max side).
    axes[0].ticks.forEach(function (t) {
      var u = 2 * t / axes[0].max - 1;
      line([u, -1, -1], [u, -1, 1], '#e6e6e6'); line([u, -1, -1], [u, 1, -1], '#eeeeee');
    });
    axes[1].ticks.forEach(function (t) {
      var u = 1 - 2 * t / axes[1].max;
      line([-1, -1, u], [1, -1, u], '#e6e6e6'); line([-1, -1, u], [-1, 1, u], '#eeeeee');
    });
    axes[2].ticks.forEach(function (t) {
      var u = 2 * t / axes[2].max - 1;
      line([-1, u, -1], [-1, u, 1], '#eeeeee'); line([-1, u, -1], [1, u, -1], '#eeeeee');
    });
    var c = [-1, 1];
    c.forEach(function (a) { c.forEach(function (b) {
      line([-1, a, b], [1, a, b], '#cccccc'); line([a, -1, b], [a, 1, b], '#cccccc'); line([a, b, -1], [a, b, 1], '#cccccc');
    }); });
    // The three axes start at the origin corner: x along the front floor edge, y along the right floor
    // edge, z up the front-left edge.
    line([-1, -1, 1], [1, -1, 1], '#333', 1.5);
    line([1, -1, 1], [1, -1, -1], '#333', 1.5);
    line([-1, -1, 1], [-1, 1, 1], '#333', 1.5);
    function tick(k, t) { return t.toFixed(axes[k].decimals); }
    axes[0].ticks.forEach(function (t) { text([2 * t / axes[0].max - 1, -1, 1.13], tick(0, t), '#333'); });
    axes[1].ticks.forEach(function (t) { if (t > 0) text([1.13, -1, 1 - 2 * t / axes[1].max], tick(1, t), '#333', 'left'); });
    axes[2].ticks.forEach(function (t) { if (t > 0) text([-1.05, 2 * t / axes[2].max - 1, 1.05], tick(2, t), '#333', 'right'); });
    text([0, -1, 1.3], axes[0].title, '#000', 'center', 0, 8, 'bold 12px sans-serif');
    text([1.3, -1, 0], axes[1].title, '#000', 'left', 6, 6, 'bold 12px sans-serif');
    text([-1, 1.1, 1], axes[2].title, '#000', 'center', 0, -8, 'bold 12px sans-serif');
    // Points, far to near, with faint drop lines to the floor.
    projected = [];
    D.points.forEach(function (p, i) {
      if (hidden[p[0]]) return;
      var w = world(p[1], p[2], p[3]), q = project(w);
      q.i = i; q.w = w; projected.push(q);
    });
    projected.sort(function (a, b) { return a.depth - b.depth; });
    projected.forEach(function (q) { line(q.w, [q.w[0], -1, q.w[2]], 'rgba(0,0,0,0.08)'); });
    var shown = 0;
    projected.forEach(function (q) {
      var p = D.points[q.i], s = D.series[p[0]];
      marker(q.x, q.y, Math.max(2.5, 5 * q.scale), s.shape, s.colour);
      shown++;
    });
    if (firstDraw) {
      firstDraw = false;
      var img = ctx.getImageData(0, 0, cv.width, cv.height).data, ink = 0;
      for (var k = 0; k < img.length; k += 4) if (img[k] < 250 || img[k + 1] < 250 || img[k + 2] < 250) ink++;
      if (document.title.indexOf('error') !== 0) document.title = 'rendered:' + shown + ' points;ink:' + ink;
    }
  }
  function legend() {
    var el = document.getElementById('legend');
    D.series.forEach(function (s, k) {
      var n = D.points.filter(function (p) { return p[0] === k; }).length;
      var span = document.createElement('span'), sw = document.createElement('i');
      sw.style.background = s.colour;
      if (s.shape === 0) sw.style.borderRadius = '50%';
      span.appendChild(sw);
      span.appendChild(document.createTextNode(s.name + ' (' + n + ')'));
      span.title = 'click to hide or show';
      span.onclick = function () { hidden[k] = !hidden[k]; span.className = hidden[k] ? 'off' : ''; draw(); };
      el.appendChild(span);
    });
  }
  function nearest(mx, my) {
    var best = null, bd = 64;
    projected.forEach(function (q) {
      var d = (q.x - mx) * (q.x - mx) + (q.y - my) * (q.y - my);
      if (d <= bd) { bd = d; best = q; }
    });
    return best;
  }
  function showTip(mx, my) {
    var q = nearest(mx, my);
    if (!q) { tip.style.display = 'none'; return; }
    var p = D.points[q.i], s = D.series[p[0]];
    tip.innerHTML = '';
    [s.name + ' · record ' + p[4], 'input ' + p[5] + ' + output ' + p[2] + ' = ' + p[1] + ' tokens',
     'time ' + fmt(p[3]) + ' s · ' + fmt(p[2] / p[3]) + ' tok/s'].forEach(function (t) {
      var d = document.createElement('div'); d.textContent = t; tip.appendChild(d);
    });
    tip.style.left = (mx + 14) + 'px'; tip.style.top = (my + 10) + 'px'; tip.style.display = 'block';
  }
  var drag = null;
  function pos(e) { var r = cv.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  cv.addEventListener('pointerdown', function (e) {
    drag = pos(e); cv.classList.add('drag'); cv.setPointerCapture(e.pointerId); tip.style.display = 'none';
  });
  cv.addEventListener('pointermove', function (e) {
    var p = pos(e);
    if (!drag) { showTip(p[0], p[1]); return; }
    view.yaw += (p[0] - drag[0]) * 0.01;
    view.pitch = Math.max(-1.55, Math.min(1.55, view.pitch + (p[1] - drag[1]) * 0.01));
    drag = p; draw();
  });
  function endDrag() { drag = null; cv.classList.remove('drag'); }
  cv.addEventListener('pointerup', endDrag);
  cv.addEventListener('pointercancel', endDrag);
  cv.addEventListener('pointerleave', function () { if (!drag) tip.style.display = 'none'; });
  cv.addEventListener('wheel', function (e) {
    e.preventDefault();
    view.zoom = Math.max(0.3, Math.min(5, view.zoom * Math.exp(-e.deltaY * 0.001))); draw();
  }, { passive: false });
  cv.addEventListener('dblclick', function () { location.hash = ''; reset(); draw(); });
  document.getElementById('reset').onclick = function () { location.hash = ''; reset(); draw(); };
  document.getElementById('front').onclick = function () { view.yaw = 0; view.pitch = 0; draw(); };
  document.getElementById('side').onclick = function () { view.yaw = Math.PI / 2; view.pitch = 0; draw(); };
  document.getElementById('top').onclick = function () { view.yaw = 0; view.pitch = Math.PI / 2 - 0.01; draw(); };
  window.addEventListener('resize', draw);
  reset(); legend(); draw();
})();
)JS";

}  // namespace

std::string scatter3d_html(const std::vector<ScatterPoint>& points, const std::string& title,
                           const std::string& subtitle, const std::vector<std::string>& axis_titles) {
  // Series in first-seen order; colour per dtype, marker shape per batch size.
  std::vector<std::string> series, dtypes;
  std::vector<int> batches;
  nlohmann::json js = nlohmann::json::array(), jp = nlohmann::json::array();
  for (const auto& p : points) {
    if (std::find(dtypes.begin(), dtypes.end(), p.dtype) == dtypes.end()) dtypes.push_back(p.dtype);
    if (std::find(batches.begin(), batches.end(), p.batch) == batches.end()) batches.push_back(p.batch);
    auto it = std::find(series.begin(), series.end(), p.series);
    if (it == series.end()) {
      series.push_back(p.series);
      size_t di = size_t(std::find(dtypes.begin(), dtypes.end(), p.dtype) - dtypes.begin());
      size_t bi = size_t(std::find(batches.begin(), batches.end(), p.batch) - batches.begin());
      js.push_back({{"name", p.series}, {"colour", dtype_colour(di)}, {"shape", int(bi % 4)}});
      it = series.end() - 1;
    }
    // [series, x = input+output, y = output, z = time, record, input]
    jp.push_back({int(it - series.begin()), p.input_tokens + p.output_tokens, p.output_tokens, p.time_s, p.index,
                  p.input_tokens});
  }
  nlohmann::json data = {{"series", js}, {"points", jp}, {"axes", axis_titles}};
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>loading</title>\n<style>" + std::string(kStyle) + "</style>\n";
  // Installed before anything else runs, so any script error is visible to a headless check.
  h += "<script>window.onerror = function (msg, src, line) { document.title = 'error: ' + msg; "
       "var e = document.createElement('pre'); e.id = 'error'; e.textContent = 'script error: ' + msg + ' (line ' + "
       "line + ')'; (document.body || document.documentElement).appendChild(e); };</script>\n";
  h += "</head>\n<body>\n<h1>" + html_escape(title) + "</h1>\n<p class=\"sub\">" + html_escape(subtitle) + "</p>\n";
  h += "<div><button id=\"reset\">reset view</button><button id=\"front\">front (x–z)</button>"
       "<button id=\"side\">side (y–z)</button><button id=\"top\">top (x–y)</button></div>\n";
  h += "<div id=\"legend\"></div>\n<div id=\"wrap\"><canvas id=\"c\"></canvas><div id=\"tip\"></div></div>\n";
  h += "<p class=\"help\">Drag to rotate, wheel to zoom, double-click to reset; click a legend entry to hide or "
       "show it; hover a point for its numbers. Colour = dtype, shape = batch size.</p>\n";
  h += "<script id=\"data\" type=\"application/json\">" + script_safe_json(data) + "</script>\n";
  h += "<script>" + std::string(kPageScript) + "</script>\n</body>\n</html>\n";
  return h;
}

}  // namespace glmlab::lab
