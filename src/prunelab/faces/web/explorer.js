// prunelab explorer: the network of the embedded JSON, computed in the browser in float64.
// No dependencies and no network access. Nodes are numbered layer by layer, as prunelab's node
// masks are. See prunelab/web/explorer.py for the Python function each number equals.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);

  // ---------------------------------------------------------------------------------------
  // embedded arrays

  function decode(a) {
    const bin = atob(a.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    switch (a.dtype) {
      case "f64": return new Float64Array(bytes.buffer);
      case "f32": return Float64Array.from(new Float32Array(bytes.buffer)); // exact
      case "i32": return new Int32Array(bytes.buffer);
      case "u8": return bytes;
      default: throw new Error("unknown dtype " + a.dtype);
    }
  }

  const LAYERS = DATA.layers.map((l) => {
    const [out, inp] = l.W.shape;
    const W = decode(l.W); // [out, in], row-major
    const WT = new Float64Array(inp * out); // [in, out]: inner loops run over outputs
    for (let k = 0; k < out; k++) for (let j = 0; j < inp; j++) WT[j * out + k] = W[k * inp + j];
    return { W, WT, b: decode(l.b), out, inp, act: l.activation, slope: l.slope };
  });
  const NL = LAYERS.length; // dense layers; hidden layers are 0..NL-2
  const HID = LAYERS.slice(0, -1).map((l) => l.out);
  const OFFSET = [0];
  for (const h of HID) OFFSET.push(OFFSET[OFFSET.length - 1] + h);
  const H = OFFSET[HID.length]; // total hidden width
  const C = DATA.classes;
  const DIN = DATA.widths[0];
  const X = decode(DATA.x);
  const Y = decode(DATA.y);
  const N = Y.length;
  const STD = decode(DATA.std);
  const MEAN = decode(DATA.mean);
  const LAYER_OF = new Int32Array(H);
  for (let i = 0; i < HID.length; i++) for (let j = 0; j < HID[i]; j++) LAYER_OF[OFFSET[i] + j] = i;

  // ---------------------------------------------------------------------------------------
  // activations (the twins of prunelab.models.phi / derivatives)

  function erf(x) {
    const ax = Math.abs(x);
    if (ax < 2.5) { // Maclaurin series; terms stay below 600, so ~1e-14 absolute
      const x2 = x * x;
      let term = x, sum = x;
      for (let n = 1; n < 100; n++) {
        term *= -x2 / n;
        const t = term / (2 * n + 1);
        sum += t;
        if (Math.abs(t) < 1e-17) break;
      }
      return sum * 1.1283791670955126; // 2 / sqrt(pi)
    }
    if (ax >= 6) return Math.sign(x);
    // erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
    let f = ax;
    for (let k = 80; k >= 1; k--) f = ax + (k / 2) / f;
    const erfc = Math.exp(-ax * ax) / (1.7724538509055159 * f);
    return Math.sign(x) * (1 - erfc);
  }
  const GELU_C = Math.sqrt(2 / Math.PI), GELU_A = 0.044715;

  function phi(act, slope, z) {
    switch (act) {
      case "relu": return z > 0 ? z : 0;
      case "leaky_relu": return z > 0 ? z : slope * z;
      case "tanh": return Math.tanh(z);
      case "sigmoid": return 1 / (1 + Math.exp(-z));
      case "gelu": return 0.5 * z * (1 + erf(z / Math.SQRT2));
      case "gelu_tanh": return 0.5 * z * (1 + Math.tanh(GELU_C * (z + GELU_A * z * z * z)));
      default: return z;
    }
  }

  function dphi(act, slope, z) {
    switch (act) {
      case "relu": return z > 0 ? 1 : 0;
      case "leaky_relu": return z > 0 ? 1 : slope;
      case "tanh": { const t = Math.tanh(z); return 1 - t * t; }
      case "sigmoid": { const s = 1 / (1 + Math.exp(-z)); return s * (1 - s); }
      case "gelu": {
        const pdf = Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);
        return 0.5 * (1 + erf(z / Math.SQRT2)) + z * pdf;
      }
      case "gelu_tanh": {
        const t = Math.tanh(GELU_C * (z + GELU_A * z * z * z));
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * z * z);
      }
      default: return 1;
    }
  }

  function phiInto(layer, Z, A) {
    const { act, slope } = layer;
    if (act === "relu") { for (let i = 0; i < Z.length; i++) A[i] = Z[i] > 0 ? Z[i] : 0; return; }
    if (act === "identity") { A.set(Z); return; }
    for (let i = 0; i < Z.length; i++) A[i] = phi(act, slope, Z[i]);
  }

  // ---------------------------------------------------------------------------------------
  // a set of points pushed through the network under a node state
  //
  // For hidden layer i, node j enters the next layer as e_j = a_j if it is on, else c_j
  // (0 for plain removal, its mean for compensation). Z[i] holds pre-activations, A[i]
  // activations. An update recomputes from the first layer whose inputs changed; when only a
  // few nodes of that layer changed, the next pre-activations get rank-one corrections
  // Z[i+1] += (e_new - e_old) w_j instead of a full product.

  class Field {
    constructor(x, n, labels, ownMeans) {
      this.n = n;
      this.labels = labels;
      this.ownMeans = ownMeans; // the data field takes the means; the grid reuses them
      this.Z = LAYERS.map((l) => new Float64Array(n * l.out));
      this.A = HID.map((h) => new Float64Array(n * h));
      this.means = new Float64Array(H);
      this.c = new Float64Array(H);
      this.prevOn = null;
      this.F = null; // logits [n, C]
      this.version = 0;
      this.cache = {};
      linear(x, null, null, 0, n, LAYERS[0], this.Z[0]);
    }

    update(on, compensate, consts) {
      let dirty = this.prevOn === null; // Z[i] changed since the last update
      const c = new Float64Array(H);
      for (let i = 0; i < NL - 1; i++) {
        const h = HID[i], o = OFFSET[i];
        if (dirty) {
          phiInto(LAYERS[i], this.Z[i], this.A[i]);
          if (this.ownMeans) columnMeans(this.A[i], this.n, h, this.means, o);
        }
        for (let j = 0; j < h; j++) c[o + j] = compensate ? (consts || this.means)[o + j] : 0;
        if (!dirty) {
          const changed = [];
          for (let j = 0; j < h; j++) {
            const was = this.prevOn[o + j], is = on[o + j];
            if (was !== is || (!is && c[o + j] !== this.c[o + j])) changed.push(j);
          }
          if (changed.length === 0) continue;
          if (4 * changed.length <= h) {
            for (const j of changed) {
              rankOne(this.A[i], this.n, h, j, this.prevOn[o + j], this.c[o + j], on[o + j],
                c[o + j], LAYERS[i + 1], this.Z[i + 1]);
            }
            dirty = true;
            continue;
          }
        }
        linear(this.A[i], on, c, o, this.n, LAYERS[i + 1], this.Z[i + 1]);
        dirty = true;
      }
      if (dirty || this.F === null) {
        const out = LAYERS[NL - 1];
        if (out.act === "identity") this.F = this.Z[NL - 1];
        else { this.F = this.F && this.F !== this.Z[NL - 1] ? this.F : new Float64Array(this.n * C); phiInto(out, this.Z[NL - 1], this.F); }
      }
      this.prevOn = on.slice();
      this.c = c;
      this.on = this.prevOn;
      this.version++;
      this.cache = {};
    }

    // mean cross-entropy, accuracy and per-class accuracy against this.labels
    scores() {
      const F = this.F, y = this.labels;
      let loss = 0, correct = 0;
      const hits = new Float64Array(C), counts = new Float64Array(C);
      for (let g = 0; g < this.n; g++) {
        let m = -Infinity, best = 0;
        for (let k = 0; k < C; k++) { const f = F[g * C + k]; if (f > m) { m = f; best = k; } }
        let s = 0;
        for (let k = 0; k < C; k++) s += Math.exp(F[g * C + k] - m);
        loss += m + Math.log(s) - F[g * C + y[g]];
        counts[y[g]]++;
        if (best === y[g]) { correct++; hits[y[g]]++; }
      }
      return { loss: loss / this.n, accuracy: correct / this.n, hits, counts };
    }

    softmax() {
      const F = this.F, P = new Float64Array(this.n * C);
      for (let g = 0; g < this.n; g++) {
        let m = -Infinity;
        for (let k = 0; k < C; k++) m = Math.max(m, F[g * C + k]);
        let s = 0;
        for (let k = 0; k < C; k++) { const e = Math.exp(F[g * C + k] - m); P[g * C + k] = e; s += e; }
        for (let k = 0; k < C; k++) P[g * C + k] /= s;
      }
      return P;
    }

    // d CE_g / d Z[i] (per point) for hidden layer i >= 1 or the output (i = NL - 1)
    dZ(i) {
      const key = "dZ" + i;
      if (this.cache[key]) return this.cache[key];
      const n = this.n;
      let out;
      if (i === NL - 1) {
        out = this.softmax();
        for (let g = 0; g < n; g++) out[g * C + this.labels[g]] -= 1;
        const last = LAYERS[NL - 1];
        if (last.act !== "identity") {
          const Z = this.Z[NL - 1];
          for (let t = 0; t < out.length; t++) out[t] *= dphi(last.act, last.slope, Z[t]);
        }
      } else {
        const dE = this.dE(i), h = HID[i], o = OFFSET[i], layer = LAYERS[i], Z = this.Z[i];
        out = new Float64Array(n * h);
        for (let g = 0; g < n; g++) {
          for (let j = 0; j < h; j++) {
            if (this.on[o + j]) out[g * h + j] = dE[g * h + j] * dphi(layer.act, layer.slope, Z[g * h + j]);
          }
        }
      }
      return (this.cache[key] = out);
    }

    // d CE_g / d e[i] for every node of hidden layer i (per point)
    dE(i) {
      const key = "dE" + i;
      if (this.cache[key]) return this.cache[key];
      const dZ = this.dZ(i + 1), next = LAYERS[i + 1], h = HID[i], k1 = next.out, n = this.n;
      const out = new Float64Array(n * h);
      for (let g = 0; g < n; g++) {
        for (let k = 0; k < k1; k++) {
          const d = dZ[g * k1 + k];
          if (d === 0) continue;
          const row = k * h;
          for (let j = 0; j < h; j++) out[g * h + j] += d * next.W[row + j];
        }
      }
      return (this.cache[key] = out);
    }

    // d CE_g / d m_j at every point, with e_j = c_j + m_j (a_j - c_j) (c held fixed)
    pointGradient(node) {
      const i = LAYER_OF[node], j = node - OFFSET[i], h = HID[i], n = this.n;
      const dZ = this.dZ(i + 1), next = LAYERS[i + 1], k1 = next.out, A = this.A[i];
      const cj = this.c[node];
      const out = new Float64Array(n);
      for (let g = 0; g < n; g++) {
        let s = 0;
        for (let k = 0; k < k1; k++) s += dZ[g * k1 + k] * next.W[k * h + j];
        out[g] = s * (A[g * h + j] - cj);
      }
      return out;
    }

    // d mean CE / d m for every node (prunelab.ablation.mask_losses's gradient in plain mode)
    meanGradient() {
      if (this.cache.meanGradient) return this.cache.meanGradient;
      const out = new Float64Array(H), n = this.n;
      for (let i = 0; i < NL - 1; i++) {
        const dE = this.dE(i), h = HID[i], o = OFFSET[i], A = this.A[i];
        for (let g = 0; g < n; g++) {
          for (let j = 0; j < h; j++) out[o + j] += dE[g * h + j] * (A[g * h + j] - this.c[o + j]);
        }
      }
      for (let t = 0; t < H; t++) out[t] /= n;
      return (this.cache.meanGradient = out);
    }
  }

  // Z = E W.T + b with e_j = on_j ? A[:, j] : c_j (on = null: every input as is)
  function linear(A, on, c, o, n, layer, Z) {
    const hin = layer.inp, hout = layer.out, WT = layer.WT, b = layer.b;
    const e = new Float64Array(hin);
    for (let g = 0; g < n; g++) {
      const zo = g * hout, ao = g * hin;
      for (let j = 0; j < hin; j++) e[j] = on === null || on[o + j] ? A[ao + j] : c[o + j];
      for (let k = 0; k < hout; k++) Z[zo + k] = b[k];
      for (let j = 0; j < hin; j++) {
        const v = e[j];
        if (v === 0) continue;
        const wo = j * hout;
        for (let k = 0; k < hout; k++) Z[zo + k] += v * WT[wo + k];
      }
    }
  }

  function rankOne(A, n, hin, j, wasOn, wasC, isOn, isC, layer, Z) {
    const hout = layer.out, WT = layer.WT, wo = j * hout;
    for (let g = 0; g < n; g++) {
      const a = A[g * hin + j];
      const d = (isOn ? a : isC) - (wasOn ? a : wasC);
      if (d === 0) continue;
      const zo = g * hout;
      for (let k = 0; k < hout; k++) Z[zo + k] += d * WT[wo + k];
    }
  }

  function columnMeans(A, n, h, out, o) {
    for (let j = 0; j < h; j++) out[o + j] = 0;
    for (let g = 0; g < n; g++) for (let j = 0; j < h; j++) out[o + j] += A[g * h + j];
    for (let j = 0; j < h; j++) out[o + j] /= n;
  }

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
    const used = 48 + (DIN > 12 ? 36 : 18) + (C > 12 ? 36 : 18) + spacing.reduce((s, q) => s + q.cols * q.sp, 0);
    const gap = Math.max(56, (builtRatio * (top + inner + 30) - used) / (HID.length + 1));
    let x = 24;
    const columns = []; // {kind, xs[], ys[]}
    const endpoints = (count, label) => {
      if (count > 12) {
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
    columns.push(endpoints(DIN, "input"));
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
      columns.push({ kind: "hidden", layer: i, x: x + cols * sp / 2, count: h, label: `hidden ${i} (${h})`, xs, ys, sp });
      x += cols * sp + gap;
    }
    columns.push(endpoints(C, "output"));
    const width = x - gap + 24, height = top + inner + 30;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.aspectRatio = `${width} / ${height}`;

    const edgeLayer = el("g", { class: "edges" }, svg);
    for (let p = 0; p + 1 < columns.length; p++) {
      const a = columns[p], b = columns[p + 1];
      const layer = LAYERS[p];
      const group = { from: a, to: b, layer: p, edges: [], paths: [] };
      if (a.kind !== "box" && b.kind !== "box") {
        let maxW = 0;
        const all = [];
        for (let k = 0; k < b.count; k++) for (let j = 0; j < a.count; j++) {
          const w = layer.W[k * layer.inp + j];
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
        bt.textContent = `${col.count} ${col.label === "input" ? "inputs" : "classes"}`;
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
      const g = el("g", { class: "node on", tabindex: 0, role: "switch", "aria-checked": "true",
        "data-node": t, "aria-label": `hidden layer ${i}, node ${j}` }, nodes);
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
    const grad = dataField.meanGradient()[t];
    const status = state.on[t] ? "on" : state.compensate ? "removed, held at its mean" : "removed (output 0)";
    tooltip.innerHTML =
      `<b>hidden layer ${i}, node ${j}</b> <span class=muted>(mask index ${t})</span><br>` +
      `${status}<br>activation std ${fmt(STD[t])}, mean ${fmt(MEAN[t])}<br>` +
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
      title.textContent = `gradient d loss / d m of hidden layer ${i}, node ${state.gradient - OFFSET[i]}`;
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
      if (shape) {
        const [rows, cols] = shape;
        cv.width = cols; cv.height = rows;
        const ctx = cv.getContext("2d"), img = ctx.createImageData(cols, rows);
        for (let p = 0; p < rows * cols; p++) {
          const v = Math.round(255 * (1 - (x[p] - a) / (b - a)));
          img.data.set([v, v, v, 255], 4 * p);
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
      `${removed} of ${H} hidden nodes removed` +
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

  function removeLowest(k) {
    const order = Array.from({ length: H }, (_, t) => t).sort((a, b) => STD[a] - STD[b] || a - b);
    state.on.fill(1);
    for (const t of order.slice(0, Math.max(0, Math.min(H, k)))) state.on[t] = 0;
    render();
  }

  function number(id, lo, hi, fallback) {
    const v = Number(document.getElementById(id).value);
    return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
  }

  function buildLegend() {
    const items = [
      `<span class="key node-key on"></span> node on; circle size grows with the node's activation std on the data`,
      `<span class="key node-key off"></span> removed: its output is 0`,
      `<span class="key node-key off mean"></span> removed with compensation: held at its mean`,
      `<span class="key edge-key pos"></span><span class="key edge-key neg"></span> weights: positive, negative (darker is larger; at most the ${MAX_EDGES} largest between two layers)`,
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
    about.textContent = `${DATA.widths.join("-")} network · ${DATA.source ? DATA.source + " · " : ""}` +
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
      removeLowest(Math.round(number("k", 0, H, 0))));
    render();
  }

  init();

  // for tests and the console: the same numbers the page shows, at full precision
  window.explorer = {
    H, hidden: HID.slice(), classes: C, samples: N, grid: G,
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
    dataProbabilities: () => Array.from(dataField.softmax()),
    renderMs: () => lastMs,
  };
})();
