// prunelab explorer: the page around the network of the embedded JSON, whose arithmetic
// (float64) is network.js's. No dependencies and no network access. Units ("nodes": a Linear's
// features, a Conv2d's channels) are numbered layer by layer, as prunelab's unit masks are.
// See prunelab/faces/web/explorer.py for the Python function each number equals.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  const NET = Network(DATA);
  const { decode, Field } = NET;
  const HID = NET.hidden, OFFSET = NET.offset, H = NET.H, LAYER_OF = NET.layerOf;
  const CONV = DATA.conv; // per hidden layer: its units are channels
  const C = DATA.classes;
  const DIN = DATA.widths[0];
  const X = decode(DATA.x);
  const Y = decode(DATA.y);
  const N = Y.length;
  const STD = decode(DATA.std);
  const MEAN = decode(DATA.mean);
  const INPUT_BOX = DIN > 12 || NET.stages[0].kind === "conv"; // the input as one box
  // names as the reports give them: "node t" (the mask index) on an MLP; "conv2 ch 5" and
  // "fc1 #17" (layers counted from 1 per kind, the unit within its layer) on a convnet
  const ANY_CONV = CONV.some(Boolean);
  const nthOfKind = (i) => CONV.slice(0, i + 1).filter((c) => c === CONV[i]).length;
  const layerLabel = (i) => (ANY_CONV ? `${CONV[i] ? "conv" : "fc"}${nthOfKind(i)}` : `layer ${i + 1}`);
  const unitLabel = (t) => {
    const i = LAYER_OF[t], j = t - OFFSET[i];
    if (!ANY_CONV) return `node ${t}`;
    return CONV[i] ? `${layerLabel(i)} ch ${j}` : `${layerLabel(i)} #${j}`;
  };

  // ---------------------------------------------------------------------------------------
  // state

  // hover: the node under the pointer or focus (tooltip); gradient: the node whose gradient map
  // the heatmap shows (set on hover or focus, cleared by a toggle so the map shows its effect)
  const state = { on: new Uint8Array(H).fill(1), compensate: false, hover: null, gradient: null };
  const dataField = new Field(X, N, Y, true);
  const PLANE = DATA.plane;
  let gridField = null, G = 0, LIM = 2, AXIS = null;
  if (PLANE) {
    G = PLANE.n; LIM = PLANE.lim; AXIS = decode(PLANE.axis);
    const pts = new Float64Array(G * G * 2); // row-major, x1 outer (row 0: x1 = -lim)
    for (let r = 0; r < G; r++) for (let c = 0; c < G; c++) {
      pts[(r * G + c) * 2] = AXIS[c];
      pts[(r * G + c) * 2 + 1] = AXIS[r];
    }
    gridField = new Field(pts, G * G, decode(PLANE.labels), false);
  }
  const LUT = { prob: decode(DATA.colormaps.prob), grad: decode(DATA.colormaps.grad) };
  const POINT_COLORS = [[239, 83, 80], [255, 255, 255]]; // two classes: red and white dots
  const CLASS_COLORS = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
    [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];

  dataField.update(state.on, false, null);
  const REFERENCE = dataField.scores();
  const REFERENCE_HITS = REFERENCE.hits.map((h, k) => h / Math.max(1, REFERENCE.counts[k]));
  let lastMs = 0;

  function compute() {
    dataField.update(state.on, state.compensate, null);
    if (gridField) gridField.update(state.on, state.compensate, dataField.means);
  }

  // ---------------------------------------------------------------------------------------
  // the network diagram

  const SVG_NS = "http://www.w3.org/2000/svg"; // a namespace name, never fetched
  const svg = document.getElementById("net");
  const nodeEls = [];
  const edgeGroups = [];
  const layout = { x: [], y: [], r: [] };
  const MAX_EDGES = 1500; // strongest edges drawn per pair of layers

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  // width / height the diagram should have to fill its box (wide screens) without shrinking
  // its nodes too much (narrow ones)
  function diagramRatio() {
    const w = document.getElementById("net-box").clientWidth || 600;
    return Math.max(0.75, Math.min(1.6, w / Math.max(300, window.innerHeight - 330)));
  }
  let builtRatio = 0;

  function buildDiagram() {
    const inner = 460, top = 34;
    svg.textContent = "";
    nodeEls.length = 0;
    edgeGroups.length = 0;
    builtRatio = diagramRatio();
    // spread the columns so that the drawing gets that aspect ratio
    const spacing = HID.map((h) => {
      const cols = Math.max(1, Math.ceil(h * 13 / inner));
      return { cols, rows: Math.ceil(h / cols), sp: Math.min(30, inner / Math.ceil(h / cols)) };
    });
    const used = 48 + (INPUT_BOX ? 36 : 18) + (C > 12 ? 36 : 18) + spacing.reduce((s, q) => s + q.cols * q.sp, 0);
    const gap = Math.max(56, (builtRatio * (top + inner + 30) - used) / (HID.length + 1));
    let x = 24;
    const columns = []; // {kind, xs[], ys[]}
    const endpoints = (count, label, box) => {
      if (box) {
        const col = { kind: "box", x: x + 18, count, label, xs: null, ys: null };
        x += 36 + gap;
        return col;
      }
      const sp = Math.min(34, inner / count);
      const ys = Array.from({ length: count }, (_, k) => top + inner / 2 + (k - (count - 1) / 2) * sp);
      const col = { kind: "ends", x: x + 9, count, label, xs: ys.map(() => x + 9), ys };
      x += 18 + gap;
      return col;
    };
    columns.push(endpoints(DIN, "input", INPUT_BOX));
    let maxStd = 0;
    for (let t = 0; t < H; t++) maxStd = Math.max(maxStd, STD[t]);
    for (let i = 0; i < HID.length; i++) {
      const h = HID[i], { cols, rows, sp } = spacing[i];
      const xs = [], ys = [];
      for (let j = 0; j < h; j++) {
        const cc = Math.floor(j / rows), rr = j % rows;
        const t = OFFSET[i] + j;
        xs.push(x + sp / 2 + cc * sp);
        ys.push(top + inner / 2 + (rr - (rows - 1) / 2) * sp);
        layout.x[t] = xs[j]; layout.y[t] = ys[j];
        const rel = maxStd > 0 ? Math.sqrt(STD[t] / maxStd) : 0;
        layout.r[t] = sp * (0.16 + 0.3 * rel);
      }
      // convnets: conv1, conv2, fc1, ... as the node-removal report names them
      const anyConv = CONV.some(Boolean);
      const label = `${layerLabel(i)} (${h})`;
      columns.push({ kind: "hidden", layer: i, x: x + cols * sp / 2, count: h, label, xs, ys, sp });
      x += cols * sp + gap;
    }
    columns.push(endpoints(C, "output", C > 12));
    const width = x - gap + 24, height = top + inner + 30;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.aspectRatio = `${width} / ${height}`;

    const edgeLayer = el("g", { class: "edges" }, svg);
    for (let p = 0; p + 1 < columns.length; p++) {
      const a = columns[p], b = columns[p + 1];
      const group = { from: a, to: b, layer: p, edges: [], paths: [] };
      if (a.kind !== "box" && b.kind !== "box") {
        const M = NET.edgeMatrix(NET.stages[p]); // [units, input units]
        let maxW = 0;
        const all = [];
        for (let k = 0; k < b.count; k++) for (let j = 0; j < a.count; j++) {
          const w = M[k * a.count + j];
          all.push([j, k, w]);
          maxW = Math.max(maxW, Math.abs(w));
        }
        all.sort((u, v) => Math.abs(v[2]) - Math.abs(u[2]));
        group.edges = all.slice(0, MAX_EDGES).map(([j, k, w]) => [j, k, w, Math.abs(w) / (maxW || 1)]);
        for (let s = 0; s < 6; s++) {
          group.paths.push(el("path", { class: `edge ${s < 3 ? "pos" : "neg"} w${s % 3}` }, edgeLayer));
        }
      }
      edgeGroups.push(group);
    }

    const labels = el("g", { class: "col-labels" }, svg);
    for (const col of columns) {
      const t = el("text", { x: col.x, y: 18, "text-anchor": "middle" }, labels);
      t.textContent = col.label;
      if (col.kind === "box") {
        el("rect", { x: col.x - 16, y: top + inner / 2 - 60, width: 32, height: 120, rx: 6, class: "box" }, svg);
        const bt = el("text", { x: col.x, y: top + inner / 2, "text-anchor": "middle", class: "box-label",
          transform: `rotate(-90 ${col.x} ${top + inner / 2})`, "dominant-baseline": "middle" }, svg);
        bt.textContent = col.label === "output" ? `${col.count} classes`
          : NET.stages[0].kind === "conv" ? `${DATA.input.join("×")} images` : `${col.count} inputs`;
      } else if (col.kind === "ends") {
        col.ys.forEach((yy, k) => {
          el("rect", { x: col.x - 7, y: yy - 7, width: 14, height: 14, rx: 3, class: "end" }, svg);
          if (col.label === "output") {
            const lt = el("text", { x: col.x + 12, y: yy, "dominant-baseline": "middle", class: "end-label" }, svg);
            lt.textContent = String(k);
          }
        });
      }
    }

    const nodes = el("g", { class: "nodes" }, svg);
    for (let t = 0; t < H; t++) {
      const i = LAYER_OF[t], j = t - OFFSET[i];
      const sp = columns[i + 1].sp;
      const g = el("g", { class: CONV[i] ? "node chan on" : "node on", tabindex: 0, role: "switch",
        "aria-checked": "true", "data-node": t, "aria-label": unitLabel(t) }, nodes);
      el("circle", { cx: layout.x[t], cy: layout.y[t], r: sp / 2, class: "hit" }, g);
      el("circle", { cx: layout.x[t], cy: layout.y[t], r: Math.min(sp / 2, layout.r[t] + 2.5), class: "ring" }, g);
      el("circle", { cx: layout.x[t], cy: layout.y[t], r: layout.r[t], class: "dot" }, g);
      g.addEventListener("click", () => toggle(t));
      g.addEventListener("keydown", (ev) => {
        if (ev.key === " " || ev.key === "Enter") { ev.preventDefault(); toggle(t); }
      });
      g.addEventListener("mouseenter", (ev) => setHover(t, ev));
      g.addEventListener("mousemove", (ev) => placeTooltip(ev.clientX, ev.clientY));
      g.addEventListener("mouseleave", () => setHover(null));
      g.addEventListener("focus", () => setHover(t));
      g.addEventListener("blur", () => setHover(null));
      nodeEls.push(g);
    }
  }

  function nodeY(col, k) { return col.ys[k]; }

  function drawEdges() {
    for (const grp of edgeGroups) {
      if (!grp.paths.length) continue;
      const d = ["", "", "", "", "", ""];
      const a = grp.from, b = grp.to;
      const fromHidden = a.kind === "hidden", toHidden = b.kind === "hidden";
      for (const [j, k, w, rel] of grp.edges) {
        if (fromHidden && !state.on[OFFSET[a.layer] + j]) continue;
        if (toHidden && !state.on[OFFSET[b.layer] + k]) continue;
        const s = (w >= 0 ? 0 : 3) + (rel > 0.6 ? 2 : rel > 0.3 ? 1 : 0);
        const x1 = fromHidden ? layout.x[OFFSET[a.layer] + j] : a.xs[j];
        const y1 = fromHidden ? layout.y[OFFSET[a.layer] + j] : nodeY(a, j);
        const x2 = toHidden ? layout.x[OFFSET[b.layer] + k] : b.xs[k];
        const y2 = toHidden ? layout.y[OFFSET[b.layer] + k] : nodeY(b, k);
        d[s] += `M${x1.toFixed(1)} ${y1.toFixed(1)}L${x2.toFixed(1)} ${y2.toFixed(1)}`;
      }
      grp.paths.forEach((p, s) => p.setAttribute("d", d[s]));
    }
  }

  function drawNodes() {
    svg.classList.toggle("mean-mode", state.compensate);
    for (let t = 0; t < H; t++) {
      const g = nodeEls[t], on = !!state.on[t];
      g.classList.toggle("on", on);
      g.classList.toggle("off", !on);
      g.setAttribute("aria-checked", on ? "true" : "false");
    }
  }

  // ---------------------------------------------------------------------------------------
  // tooltip

  const tooltip = document.getElementById("tooltip");

  function fmt(v, digits = 4) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e-3 && a < 1e5 ? v.toPrecision(digits) : v.toExponential(digits - 1);
  }

  function showTooltip(t) {
    const i = LAYER_OF[t], j = t - OFFSET[i];
    const grad = dataField.unitGradient(t);
    const status = state.on[t] ? "on" : state.compensate ? "removed, held at its mean" : "removed (output 0)";
    tooltip.innerHTML =
      `<b>${unitLabel(t)}</b> <span class=muted>(${ANY_CONV ? `mask index ${t}, ` : ""}${layerLabel(i)}, ${CONV[i] ? "channel" : "node"} ${j} of it)</span><br>` +
      `${status}<br>activation std ${fmt(STD[t])}, mean ${fmt(MEAN[t])}` +
      (CONV[i] ? " (over samples and positions)" : "") + "<br>" +
      `dL/dm on the data: ${fmt(grad)}${state.compensate ? " (m fades it towards its mean)" : ""}` +
      (state.compensate && !state.on[t] ? `<br>mean now ${fmt(dataField.means[t])}` : "") +
      `<br><span class=muted>click or Space: ${state.on[t] ? "remove" : "restore"}</span>`;
    tooltip.hidden = false;
  }

  function placeTooltip(cx, cy) {
    const w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    let x = cx + 14, y = cy + 14;
    if (x + w > window.innerWidth - 8) x = cx - w - 14;
    if (y + h > window.innerHeight - 8) y = cy - h - 14;
    tooltip.style.left = Math.max(4, x) + "px";
    tooltip.style.top = Math.max(4, y) + "px";
  }

  function setHover(t, ev) {
    state.hover = t;
    state.gradient = t;
    if (t === null) {
      tooltip.hidden = true;
    } else {
      showTooltip(t);
      if (ev) placeTooltip(ev.clientX, ev.clientY);
      else {
        const box = nodeEls[t].getBoundingClientRect();
        placeTooltip(box.right, box.bottom);
      }
    }
    if (gridField) drawPlane();
  }

  // ---------------------------------------------------------------------------------------
  // the plane: heatmap, data, boundary

  const heat = document.getElementById("heat");
  const overlay = document.getElementById("overlay");
  const bar = document.getElementById("bar");

  function lutIndex(u) { return Math.min(255, Math.max(0, Math.floor(u * 256))); }

  function gridGradient(t) {
    const key = "grad" + t;
    gridField.cache[key] = gridField.cache[key] || gridField.pointGradient(t);
    return gridField.cache[key];
  }

  function drawPlane() {
    const ctx = heat.getContext("2d");
    const img = ctx.createImageData(G, G);
    const px = img.data;
    const title = document.getElementById("plane-title");
    let lo, mid, hi;
    // grid point g = r * G + c (r: x1 index from -lim) -> canvas row G - 1 - r (row 0 is the top)
    const paint = (value) => {
      for (let r = 0; r < G; r++) {
        const row = (G - 1 - r) * G;
        for (let c = 0; c < G; c++) {
          const q = (row + c) * 4, rgb = value(r * G + c);
          px[q] = rgb[0]; px[q + 1] = rgb[1]; px[q + 2] = rgb[2]; px[q + 3] = 255;
        }
      }
    };
    const lut = (table) => (u) => table.subarray(3 * lutIndex(u), 3 * lutIndex(u) + 3);
    if (state.gradient !== null) {
      const v = gridGradient(state.gradient);
      // colour scale: the 99th percentile of |gradient| (far from the data a few points have
      // huge losses and gradients that would wash out the rest); larger values are clipped
      const sorted = Float64Array.from(v, Math.abs).sort();
      const q = sorted[Math.floor(0.99 * (sorted.length - 1))];
      const scale = q > 0 ? q : sorted[sorted.length - 1] || 1, color = lut(LUT.grad);
      paint((g) => color((Math.max(-1, Math.min(1, v[g] / scale)) + 1) / 2));
      const i = LAYER_OF[state.gradient];
      title.textContent = `gradient d loss / d m of ${unitLabel(state.gradient)}`;
      [lo, mid, hi] = [`≤ ${fmt(-scale, 2)}`, "0", `≥ ${fmt(scale, 2)}`];
      drawBar(LUT.grad);
    } else if (C === 2) {
      const P = gridField.softmax(), color = lut(LUT.prob);
      paint((g) => color(P[g * 2 + 1]));
      title.textContent = `P(class 1) over [−${LIM}, ${LIM}]²`;
      [lo, mid, hi] = ["0", "0.5", "1"];
      drawBar(LUT.prob);
    } else {
      const P = gridField.softmax(), rgb = new Uint8Array(3);
      paint((g) => {
        let best = 0;
        for (let k = 1; k < C; k++) if (P[g * C + k] > P[g * C + best]) best = k;
        const col = CLASS_COLORS[best % 10], a = P[g * C + best];
        for (let q = 0; q < 3; q++) rgb[q] = Math.round(255 * (1 - a) + col[q] * a);
        return rgb;
      });
      title.textContent = `predicted class over [−${LIM}, ${LIM}]² (paler: less sure)`;
      [lo, mid, hi] = ["", "", ""];
    }
    ctx.putImageData(img, 0, 0);
    document.getElementById("bar-lo").textContent = lo;
    document.getElementById("bar-mid").textContent = mid;
    document.getElementById("bar-hi").textContent = hi;
    document.getElementById("colorbar").hidden = C !== 2 && state.gradient === null;
    drawOverlay();
  }

  function drawBar(lut) {
    const ctx = bar.getContext("2d");
    const img = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) {
      img.data.set([lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
  }

  // plane coordinates -> overlay pixels; grid cell centres line up with heatmap pixels
  function toPixel(x0, x1, w, h) {
    const u = ((x0 + LIM) / (2 * LIM) * (G - 1) + 0.5) / G;
    const v = ((x1 + LIM) / (2 * LIM) * (G - 1) + 0.5) / G;
    return [u * w, (1 - v) * h];
  }

  let pointsLayer = null; // the data points and the reference curve: drawn once per size

  function drawPoints(w, h, dpr) {
    if (pointsLayer && pointsLayer.width === w && pointsLayer.height === h) return pointsLayer;
    pointsLayer = document.createElement("canvas");
    pointsLayer.width = w; pointsLayer.height = h;
    const ctx = pointsLayer.getContext("2d");
    if (PLANE.reference) { // the true boundary (circle data)
      ctx.beginPath();
      PLANE.reference.forEach(([a, b], k) => {
        const [px, py] = toPixel(a, b, w, h);
        if (k) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      });
      ctx.setLineDash([5 * dpr, 4 * dpr]);
      ctx.strokeStyle = "rgba(255,255,255,0.95)";
      ctx.lineWidth = 1.5 * dpr;
      ctx.stroke();
      ctx.setLineDash([]);
    }
    const r = Math.max(2, Math.min(3.2, 80 / Math.sqrt(N))) * dpr;
    ctx.lineWidth = 0.9 * dpr;
    ctx.strokeStyle = C === 2 ? "#111111" : "#ffffff";
    for (let g = 0; g < N; g++) {
      const [px, py] = toPixel(X[2 * g], X[2 * g + 1], w, h);
      ctx.beginPath();
      ctx.arc(px, py, r, 0, 2 * Math.PI);
      // two classes: red and white; more: each class's colour, darkened to stand out on its
      // own region of the map
      const col = C === 2 ? POINT_COLORS[Y[g]] : CLASS_COLORS[Y[g] % 10].map((v) => 0.6 * v);
      ctx.fillStyle = `rgb(${col[0]},${col[1]},${col[2]})`;
      ctx.fill();
      ctx.stroke();
    }
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    const label = (text, x, y, align, base) => { // dark text on a pale box, readable on any map
      const m = ctx.measureText(text), tw = m.width, th = 13 * dpr;
      const left = align === "right" ? x - tw : x, topY = base === "bottom" ? y - th : y;
      ctx.fillStyle = "rgba(255,255,255,0.75)";
      ctx.fillRect(left - 2 * dpr, topY, tw + 4 * dpr, th);
      ctx.fillStyle = "#111111";
      ctx.textAlign = align; ctx.textBaseline = base;
      ctx.fillText(text, x, base === "bottom" ? y - 1 * dpr : y + 1 * dpr);
    };
    label(`(−${LIM}, −${LIM})`, 3 * dpr, h - 2 * dpr, "left", "bottom");
    label(`x₀ = ${LIM}`, w - 3 * dpr, h - 2 * dpr, "right", "bottom");
    label(`x₁ = ${LIM}`, 3 * dpr, 2 * dpr, "left", "top");
    return pointsLayer;
  }

  function drawOverlay() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(overlay.clientWidth * dpr), h = Math.round(overlay.clientHeight * dpr);
    if (!w || !h) return;
    if (overlay.width !== w || overlay.height !== h) { overlay.width = w; overlay.height = h; }
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    const segs = boundary();
    const sx = w / G, sy = h / G; // fractional grid index -> pixels
    for (const [color, width] of [["#000000", 3.4], ["#ffffff", 1.7]]) {
      ctx.beginPath();
      for (let s = 0; s < segs.length; s += 4) {
        ctx.moveTo((segs[s] + 0.5) * sx, h - (segs[s + 1] + 0.5) * sy);
        ctx.lineTo((segs[s + 2] + 0.5) * sx, h - (segs[s + 3] + 0.5) * sy);
      }
      ctx.strokeStyle = color;
      ctx.lineWidth = width * dpr;
      ctx.stroke();
    }
    ctx.drawImage(drawPoints(w, h, dpr), 0, 0);
  }

  // decision boundary as segments [c1, r1, c2, r2, ...] in fractional grid indices: marching
  // squares on s = f1 - f0 for two classes, cell edges between predicted classes otherwise
  function boundary() {
    const F = gridField.F, segs = [];
    if (C === 2) {
      const s = new Float64Array(G * G);
      for (let g = 0; g < G * G; g++) s[g] = F[2 * g + 1] - F[2 * g];
      const cross = new Float64Array(8);
      for (let r = 0; r + 1 < G; r++) for (let c = 0; c + 1 < G; c++) {
        const a = s[r * G + c], b = s[r * G + c + 1], d = s[(r + 1) * G + c + 1], e = s[(r + 1) * G + c];
        const pa = a >= 0, pb = b >= 0, pd = d >= 0, pe = e >= 0;
        if (pa === pb && pb === pd && pd === pe) continue;
        let n = 0; // crossings on the edges a-b (bottom), b-d (right), d-e (top), e-a (left)
        if (pa !== pb) { cross[n++] = c + a / (a - b); cross[n++] = r; }
        if (pb !== pd) { cross[n++] = c + 1; cross[n++] = r + b / (b - d); }
        if (pd !== pe) { cross[n++] = c + 1 - d / (d - e); cross[n++] = r + 1; }
        if (pe !== pa) { cross[n++] = c; cross[n++] = r + 1 - e / (e - a); }
        segs.push(cross[0], cross[1], cross[2], cross[3]);
        if (n === 8) segs.push(cross[4], cross[5], cross[6], cross[7]);
      }
    } else {
      const cls = new Int32Array(G * G);
      for (let g = 0; g < G * G; g++) {
        let best = 0;
        for (let k = 1; k < C; k++) if (F[g * C + k] > F[g * C + best]) best = k;
        cls[g] = best;
      }
      for (let r = 0; r < G; r++) for (let c = 0; c < G; c++) {
        if (c + 1 < G && cls[r * G + c] !== cls[r * G + c + 1]) segs.push(c + 0.5, r - 0.5, c + 0.5, r + 0.5);
        if (r + 1 < G && cls[r * G + c] !== cls[(r + 1) * G + c]) segs.push(c - 0.5, r + 0.5, c + 0.5, r + 0.5);
      }
    }
    return segs;
  }

  // ---------------------------------------------------------------------------------------
  // inputs that are not 2-D: per-class accuracy and sample images

  const imageCells = [];

  function buildClassPanel() {
    const bars = document.getElementById("bars");
    for (let k = 0; k < C; k++) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.innerHTML = `<span class=cls>${k}</span><span class=track><span class=fill></span>` +
        `<span class=ref title="all nodes on"></span></span><span class=val></span>`;
      row.querySelector(".ref").style.left = (100 * REFERENCE_HITS[k]) + "%";
      bars.appendChild(row);
    }
    const box = document.getElementById("images");
    const shape = DATA.image;
    let lo = Infinity, hi = -Infinity;
    for (let t = 0; t < X.length; t++) { lo = Math.min(lo, X[t]); hi = Math.max(hi, X[t]); }
    const unit = lo >= 0 && hi <= 1;
    for (const idx of DATA.images) {
      const cell = document.createElement("figure");
      const cv = document.createElement("canvas");
      const x = X.subarray(idx * DIN, (idx + 1) * DIN);
      let a = 0, b = 1;
      if (!unit) { a = Math.min(...x); b = Math.max(...x); if (b === a) b = a + 1; }
      if (shape) { // grey [rows, cols] (dark ink on white), or colour [3, rows, cols]
        const colour = shape.length === 3, [rows, cols] = shape.slice(-2), hw = rows * cols;
        cv.width = cols; cv.height = rows;
        const ctx = cv.getContext("2d"), img = ctx.createImageData(cols, rows);
        const level = (v) => Math.round(255 * (v - a) / (b - a));
        for (let p = 0; p < hw; p++) {
          if (colour) img.data.set([level(x[p]), level(x[hw + p]), level(x[2 * hw + p]), 255], 4 * p);
          else { const v = 255 - level(x[p]); img.data.set([v, v, v, 255], 4 * p); }
        }
        ctx.putImageData(img, 0, 0);
        cv.className = "pixels";
      } else {
        cv.width = 112; cv.height = 64;
        const ctx = cv.getContext("2d");
        ctx.beginPath();
        for (let p = 0; p < DIN; p++) {
          const px = 2 + p * 108 / Math.max(1, DIN - 1), py = 60 - 56 * (x[p] - a) / (b - a);
          if (p) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        }
        ctx.strokeStyle = "#1d2327"; ctx.lineWidth = 1.5; ctx.stroke();
      }
      cv.setAttribute("role", "img");
      cv.setAttribute("aria-label", `sample ${idx}, true class ${Y[idx]}`);
      const cap = document.createElement("figcaption");
      cell.append(cv, cap);
      box.appendChild(cell);
      imageCells.push({ idx, cell, cap });
    }
  }

  function drawClassPanel(scores) {
    const rows = document.querySelectorAll("#bars .bar-row");
    rows.forEach((row, k) => {
      const n = scores.counts[k], acc = n ? scores.hits[k] / n : 0;
      row.querySelector(".fill").style.width = (100 * acc) + "%";
      row.querySelector(".val").textContent = n ? `${(100 * acc).toFixed(1)}%` : "–";
      row.title = `class ${k}: ${scores.hits[k]} of ${n} right`;
    });
    const P = dataField.softmax();
    for (const { idx, cell, cap } of imageCells) {
      let best = 0;
      for (let k = 1; k < C; k++) if (P[idx * C + k] > P[idx * C + best]) best = k;
      const right = best === Y[idx];
      cell.className = right ? "right" : "wrong";
      cap.innerHTML = `pred <b>${best}</b> (${(100 * P[idx * C + best]).toFixed(0)}%)<br>true ${Y[idx]}`;
    }
  }

  // ---------------------------------------------------------------------------------------
  // stats, legend, controls

  function drawStats(scores) {
    document.getElementById("loss").textContent = scores.loss.toFixed(5);
    document.getElementById("accuracy").textContent = (100 * scores.accuracy).toFixed(2) + "%";
    let removed = 0;
    for (let t = 0; t < H; t++) removed += state.on[t] ? 0 : 1;
    document.getElementById("removed").textContent =
      `${removed} of ${H} hidden ${CONV.some(Boolean) ? "units (channels and nodes)" : "nodes"} removed` +
      (removed ? (state.compensate ? " (held at their means)" : " (plain removal)") : "");
  }

  function render() {
    const t0 = performance.now();
    compute();
    const scores = dataField.scores();
    drawStats(scores);
    drawNodes();
    drawEdges();
    if (gridField) drawPlane(); else drawClassPanel(scores);
    if (state.hover !== null && !tooltip.hidden) showTooltip(state.hover);
    lastMs = performance.now() - t0;
    document.body.dataset.renderMs = lastMs.toFixed(2);
  }

  function toggle(t) {
    state.on[t] = state.on[t] ? 0 : 1;
    state.gradient = null; // show the effect on the output map
    render();
  }

  function mulberry32(seed) { // a small seeded generator: the same subset for the same seed
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function randomSubset(p, seed) {
    const u = mulberry32(seed);
    for (let t = 0; t < H; t++) state.on[t] = u() < p ? 1 : 0;
    render();
  }

  // The train-vs-prune source removed the lowest-std nodes with bias compensation (b_j +=
  // sum_i mean(x_i) w_ij), which holds them at their means: the default here too.
  function removeLowest(k, compensate = true) {
    const order = Array.from({ length: H }, (_, t) => t).sort((a, b) => STD[a] - STD[b] || a - b);
    state.on.fill(1);
    for (const t of order.slice(0, Math.max(0, Math.min(H, k)))) state.on[t] = 0;
    state.compensate = !!compensate;
    document.getElementById("compensate").checked = state.compensate;
    document.getElementById("lowest-compensate").checked = state.compensate;
    render();
  }

  function number(id, lo, hi, fallback) {
    const v = Number(document.getElementById(id).value);
    return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
  }

  function buildLegend() {
    const items = [
      `<span class="key node-key on"></span> node on; circle size grows with the node's activation std on the data`,
      ...(CONV.some(Boolean) ? [`<span class="key node-key on chan"></span> a conv channel: one switch for its whole feature map (its std over samples and positions)`] : []),
      `<span class="key node-key off"></span> removed: its output is 0`,
      `<span class="key node-key off mean"></span> removed with compensation: held at its mean`,
      `<span class="key edge-key pos"></span><span class="key edge-key neg"></span> weights: positive, negative (darker is larger; at most the ${MAX_EDGES} largest between two layers${CONV.some(Boolean) ? "; from a channel: the sum of the weights that read it" : ""})`,
    ];
    if (PLANE) {
      items.push(
        C === 2
          ? `<span class="key dot-key c0"></span><span class="key dot-key c1"></span> data points of class 0 and 1; white line: decision boundary P = 0.5` +
            (PLANE.reference ? "; dashed: the true circle" : "")
          : `coloured dots: data points by class; white line: decision boundary`,
        `hovering or focusing a node shows d loss / d m_j at each point instead (red: turning the node up raises the loss there, blue: lowers it; the plane's labels from ${DATA.data === "circle" ? "the circle rule" : "the nearest data point"}); a click shows the output again`,
      );
    } else {
      items.push(`bars: accuracy per class on the embedded data; grey tick: all nodes on`);
    }
    document.getElementById("legend").innerHTML = "<h3>Legend</h3><ul>" + items.map((s) => `<li>${s}</li>`).join("") + "</ul>";
  }

  function init() {
    const about = document.getElementById("about");
    about.textContent = `${DATA.arch} network · ${DATA.source ? DATA.source + " · " : ""}` +
      `loss and accuracy on ${N} points of ${DATA.data} · computed in your browser`;
    document.getElementById("reference").textContent =
      `all nodes on: loss ${REFERENCE.loss.toFixed(5)}, accuracy ${(100 * REFERENCE.accuracy).toFixed(2)}%`;
    buildDiagram();
    new ResizeObserver(() => {
      if (Math.abs(diagramRatio() - builtRatio) > 0.15) { buildDiagram(); drawNodes(); drawEdges(); }
    }).observe(document.getElementById("net-box"));
    buildLegend();
    if (PLANE) {
      document.getElementById("plane-panel").hidden = false;
      heat.width = G; heat.height = G;
      new ResizeObserver(() => drawOverlay()).observe(overlay);
    } else {
      document.getElementById("class-panel").hidden = false;
      buildClassPanel();
    }
    document.getElementById("compensate").addEventListener("change", (ev) => {
      state.compensate = ev.target.checked;
      render();
    });
    document.getElementById("all-on").addEventListener("click", () => { state.on.fill(1); render(); });
    document.getElementById("random").addEventListener("click", () =>
      randomSubset(number("keep", 0, 1, 0.5), Math.round(number("seed", 0, 2 ** 32 - 1, 0))));
    document.getElementById("lowest").addEventListener("click", () =>
      removeLowest(Math.round(number("k", 0, H, 0)), document.getElementById("lowest-compensate").checked));
    render();
  }

  init();

  // for tests and the console: the same numbers the page shows, at full precision
  window.explorer = {
    H, hidden: HID.slice(), conv: CONV.slice(), classes: C, samples: N, grid: G,
    removed: () => Array.from({ length: H }, (_, t) => t).filter((t) => !state.on[t]),
    setRemoved: (list) => { state.on.fill(1); for (const t of list) state.on[t] = 0; render(); },
    toggle,
    setCompensate: (on) => { document.getElementById("compensate").checked = !!on; state.compensate = !!on; render(); },
    allOn: () => { state.on.fill(1); render(); },
    randomSubset, removeLowest,
    scores: () => { const s = dataField.scores(); return { loss: s.loss, accuracy: s.accuracy, hits: Array.from(s.hits), counts: Array.from(s.counts) }; },
    gridProbabilities: () => (gridField ? Array.from(gridField.softmax()) : null),
    gridGradient: (t) => (gridField ? Array.from(gridGradient(t)) : null),
    dataGradient: () => Array.from(dataField.meanGradient()),
    unitGradient: (t) => dataField.unitGradient(t),
    dataProbabilities: () => Array.from(dataField.softmax()),
    renderMs: () => lastMs,
  };
})();
