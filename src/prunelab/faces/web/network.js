// prunelab explorer: the network's arithmetic in float64, no dependencies and no DOM.
// explorer.py inlines this file before explorer.js; see explorer.py for the Python function
// each number equals.
//
// A network is a list of stages, one per Linear or Conv2d (eval-mode BatchNorm folded into it
// in Python), each followed by a chain of ops:
//
//   Z = affine(E_prev)  ->  pre: pools and the activation  ->  U: the units
//                       ->  pools (until the next layer reads them)  ->  Q
//
// A hidden stage's units enter the next stage as E = Q where a unit is on, else its "hold"
// map: 0 for plain removal, or with compensation the unit's mean c_j held as a constant map
// through the same pools. Masking after the pools is what prunelab's mask engine does (a 0/1
// factor commutes with pooling), and at a mask of exactly 0 behind a max pool it gives the
// one-sided derivative of turning the unit up. Every array is [n, channels, positions],
// row-major like torch's NCHW (a Linear's units are channels of one position), so a Flatten
// changes nothing and is left out.
"use strict";
const Network = (DATA) => {
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

  const prod = (shape) => shape.reduce((p, v) => p * v, 1);

  // ---------------------------------------------------------------------------------------
  // activations (the twins of prunelab.ops.phi / derivatives)

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

  function phiInto(act, slope, Z, A) {
    if (act === "relu") { for (let i = 0; i < Z.length; i++) A[i] = Z[i] > 0 ? Z[i] : 0; return; }
    if (act === "identity") { A.set(Z); return; }
    for (let i = 0; i < Z.length; i++) A[i] = phi(act, slope, Z[i]);
  }

  // ---------------------------------------------------------------------------------------
  // the stages

  // for each kernel offset t, the outputs o with 0 <= o stride - pad + t dil < size: [lo, hi)
  function valid(k, outSize, stride, pad, dil, size) {
    const r = new Int32Array(2 * k);
    for (let t = 0; t < k; t++) {
      let lo = 0, hi = outSize;
      while (lo < hi && lo * stride - pad + t * dil < 0) lo++;
      while (hi > lo && (hi - 1) * stride - pad + t * dil >= size) hi--;
      r[2 * t] = lo; r[2 * t + 1] = hi;
    }
    return r;
  }

  function makeStage(l, inUnits) {
    const s = {
      kind: l.kind, W: decode(l.W), b: decode(l.b), act: l.activation, slope: l.slope,
      inSize: prod(l.in), outSize: prod(l.out), units: l.out[0], inUnits,
    };
    if (l.kind === "linear") { // WT: [in, out], so that inner loops run over outputs
      const out = s.outSize, inp = s.inSize;
      s.WT = new Float64Array(inp * out);
      for (let k = 0; k < out; k++) for (let j = 0; j < inp; j++) s.WT[j * out + k] = s.W[k * inp + j];
    } else {
      const [Ci, H, Wd] = l.in, [Co, Ho, Wo] = l.out, [kh, kw] = l.W.shape.slice(2);
      Object.assign(s, { Ci, H, Wd, Co, Ho, Wo, kh, kw, sy: l.stride[0], sx: l.stride[1],
        py: l.padding[0], px: l.padding[1], dy: l.dilation[0], dx: l.dilation[1] });
      s.offset = l.offset ? decode(l.offset) : null; // per-position bias [Co, Ho, Wo]
      s.rows = valid(kh, Ho, s.sy, s.py, s.dy, H);
      s.cols = valid(kw, Wo, s.sx, s.px, s.dx, Wd);
    }
    let P = s.outSize / s.units; // positions per channel
    s.chain = [];
    for (const op of [...l.pre, ...l.pools]) {
      if (op.op === "act") {
        s.chain.push({ act: op.activation, slope: op.slope, C: s.units, P, Pout: P });
      } else {
        const Pout = op.out[0] * op.out[1];
        s.chain.push({ max: op.kind === "max", index: decode(op.index), weight: decode(op.weight),
          K: op.index.shape[1], C: s.units, P, Pout });
        P = Pout;
      }
    }
    s.unitAt = l.pre.length; // chain[0 .. unitAt) leads to the units
    s.unitPos = s.unitAt ? s.chain[s.unitAt - 1].Pout : s.outSize / s.units;
    s.qPos = P; // positions of a unit where the next stage reads it
    return s;
  }

  const STAGES = [];
  for (const l of DATA.layers) {
    const prev = STAGES[STAGES.length - 1];
    STAGES.push(makeStage(l, prev ? prev.units : l.kind === "conv" ? l.in[0] : prod(l.in)));
  }
  const L = STAGES.length - 1; // hidden stages 0 .. L-1, the output stage L
  const HID = STAGES.slice(0, L).map((s) => s.units);
  const OFFSET = [0];
  for (const h of HID) OFFSET.push(OFFSET[OFFSET.length - 1] + h);
  const H = OFFSET[L];
  const LAYER_OF = new Int32Array(H);
  for (let i = 0; i < L; i++) for (let j = 0; j < HID[i]; j++) LAYER_OF[OFFSET[i] + j] = i;
  const C = DATA.classes;

  // ---------------------------------------------------------------------------------------
  // the ops: forward, and the gradient at the input from the gradient G at the output

  // Z = A W.T + b (Linear) or Z = W * A + b + offset (Conv2d, a cross-correlation), n samples
  function affine(s, A, n, Z) {
    if (s.kind === "linear") {
      const hin = s.inSize, hout = s.outSize, WT = s.WT, b = s.b;
      for (let g = 0; g < n; g++) {
        const zo = g * hout, ao = g * hin;
        for (let k = 0; k < hout; k++) Z[zo + k] = b[k];
        for (let j = 0; j < hin; j++) {
          const v = A[ao + j];
          if (v === 0) continue;
          const wo = j * hout;
          for (let k = 0; k < hout; k++) Z[zo + k] += v * WT[wo + k];
        }
      }
      return;
    }
    const { Ci, Co, kh, kw, b, offset } = s, hw = s.H * s.Wd, ohw = s.Ho * s.Wo;
    for (let g = 0; g < n; g++) {
      for (let k = 0; k < Co; k++) {
        const zb = (g * Co + k) * ohw;
        for (let q = 0; q < ohw; q++) Z[zb + q] = b[k] + (offset ? offset[k * ohw + q] : 0);
        for (let c = 0; c < Ci; c++) conv(s, A, (g * Ci + c) * hw, (k * Ci + c) * kh * kw, Z, zb);
      }
    }
  }

  // one input map (at ab) into one output map (at zb) through the kernel at wb of s.W
  function conv(s, A, ab, wb, Z, zb) {
    const { kh, kw, Wd, Wo, sy, sx, py, px, dy, dx, rows, cols, W } = s;
    for (let ky = 0; ky < kh; ky++) {
      const oy0 = rows[2 * ky], oy1 = rows[2 * ky + 1];
      for (let kx = 0; kx < kw; kx++) {
        const w = W[wb + ky * kw + kx];
        if (w === 0) continue;
        const ox0 = cols[2 * kx], ox1 = cols[2 * kx + 1];
        for (let oy = oy0; oy < oy1; oy++) {
          const ar = ab + (oy * sy - py + ky * dy) * Wd - px + kx * dx, zr = zb + oy * Wo;
          if (sx === 1) for (let ox = ox0; ox < ox1; ox++) Z[zr + ox] += w * A[ar + ox];
          else for (let ox = ox0; ox < ox1; ox++) Z[zr + ox] += w * A[ar + ox * sx];
        }
      }
    }
  }

  // its transpose: the gradient of one output map (at zb of G) into one input map (at ab of D)
  function convBack(s, G, zb, wb, D, ab) {
    const { kh, kw, Wd, Wo, sy, sx, py, px, dy, dx, rows, cols, W } = s;
    for (let ky = 0; ky < kh; ky++) {
      const oy0 = rows[2 * ky], oy1 = rows[2 * ky + 1];
      for (let kx = 0; kx < kw; kx++) {
        const w = W[wb + ky * kw + kx];
        if (w === 0) continue;
        const ox0 = cols[2 * kx], ox1 = cols[2 * kx + 1];
        for (let oy = oy0; oy < oy1; oy++) {
          const ar = ab + (oy * sy - py + ky * dy) * Wd - px + kx * dx, zr = zb + oy * Wo;
          if (sx === 1) for (let ox = ox0; ox < ox1; ox++) D[ar + ox] += w * G[zr + ox];
          else for (let ox = ox0; ox < ox1; ox++) D[ar + ox * sx] += w * G[zr + ox];
        }
      }
    }
  }

  // Z += the stage's answer (without bias) to input channel j alone, its maps D: [n, block]
  function addChannel(s, j, D, n, Z) {
    if (s.kind === "linear") {
      const blk = s.inSize / s.inUnits, hout = s.outSize, WT = s.WT;
      for (let g = 0; g < n; g++) {
        const zo = g * hout;
        for (let p = 0; p < blk; p++) {
          const d = D[g * blk + p];
          if (d === 0) continue;
          const wo = (j * blk + p) * hout;
          for (let k = 0; k < hout; k++) Z[zo + k] += d * WT[wo + k];
        }
      }
      return;
    }
    const { Ci, Co, kh, kw } = s, hw = s.H * s.Wd, ohw = s.Ho * s.Wo;
    for (let g = 0; g < n; g++) {
      let any = false;
      for (let p = 0; p < hw && !any; p++) any = D[g * hw + p] !== 0;
      if (!any) continue;
      for (let k = 0; k < Co; k++) conv(s, D, g * hw, (k * Ci + j) * kh * kw, Z, (g * Co + k) * ohw);
    }
  }

  // d / d input channels c0 .. c1-1 of the stage, from dZ: [n, (c1 - c0) block]
  function affineBack(s, dZ, n, c0, c1) {
    const width = c1 - c0;
    if (s.kind === "linear") {
      const blk = s.inSize / s.inUnits, hin = s.inSize, hout = s.outSize, W = s.W;
      const w = width * blk, D = new Float64Array(n * w);
      for (let g = 0; g < n; g++) {
        for (let k = 0; k < hout; k++) {
          const d = dZ[g * hout + k];
          if (d === 0) continue;
          const row = k * hin + c0 * blk, out = g * w;
          for (let i = 0; i < w; i++) D[out + i] += d * W[row + i];
        }
      }
      return D;
    }
    const { Ci, Co, kh, kw } = s, hw = s.H * s.Wd, ohw = s.Ho * s.Wo;
    const D = new Float64Array(n * width * hw);
    for (let g = 0; g < n; g++) {
      for (let k = 0; k < Co; k++) {
        for (let c = c0; c < c1; c++) {
          convBack(s, dZ, (g * Co + k) * ohw, (k * Ci + c) * kh * kw, D, (g * width + c - c0) * hw);
        }
      }
    }
    return D;
  }

  // a chain op (activation or pool) on m = n * channels maps of op.P positions
  function apply(op, A, n, out) {
    if (op.act !== undefined) { phiInto(op.act, op.slope, A, out); return; }
    const { index, weight, K, P, Pout, max } = op, maps = n * op.C;
    for (let m = 0; m < maps; m++) {
      const ab = m * P, ob = m * Pout;
      for (let o = 0; o < Pout; o++) {
        const r = o * K;
        if (max) {
          let best = A[ab + index[r]];
          for (let t = 1; t < K && index[r + t] >= 0; t++) {
            const v = A[ab + index[r + t]];
            if (v > best) best = v;
          }
          out[ob + o] = best;
        } else {
          let sum = 0;
          for (let t = 0; t < K && index[r + t] >= 0; t++) sum += weight[r + t] * A[ab + index[r + t]];
          out[ob + o] = sum;
        }
      }
    }
  }

  // its gradient at the input A from the gradient G at the output; a max pool routes each
  // output's gradient to the first largest input of its window (row-major), as torch does
  function back(op, A, G, n) {
    const D = new Float64Array(A.length);
    if (op.act !== undefined) {
      for (let i = 0; i < A.length; i++) D[i] = G[i] === 0 ? 0 : G[i] * dphi(op.act, op.slope, A[i]);
      return D;
    }
    const { index, weight, K, P, Pout, max } = op, maps = n * op.C;
    for (let m = 0; m < maps; m++) {
      const ab = m * P, ob = m * Pout;
      for (let o = 0; o < Pout; o++) {
        const d = G[ob + o];
        if (d === 0) continue;
        const r = o * K;
        if (max) {
          let arg = index[r], best = A[ab + arg];
          for (let t = 1; t < K && index[r + t] >= 0; t++) {
            const v = A[ab + index[r + t]];
            if (v > best) { best = v; arg = index[r + t]; }
          }
          D[ab + arg] += d;
        } else {
          for (let t = 0; t < K && index[r + t] >= 0; t++) D[ab + index[r + t]] += weight[r + t] * d;
        }
      }
    }
    return D;
  }

  // the map unit j of stage s is held at where the next stage reads it: the constant c_j at
  // the units, through the pools after them; for every unit of the stage
  function holdMaps(s, c, o, out) {
    let a = new Float64Array(s.units * s.unitPos);
    for (let j = 0; j < s.units; j++) a.fill(c[o + j], j * s.unitPos, (j + 1) * s.unitPos);
    for (let k = s.unitAt; k < s.chain.length; k++) {
      const op = s.chain[k], b = new Float64Array(op.C * op.Pout);
      apply(op, a, 1, b);
      a = b;
    }
    out.set(a);
  }

  // signed strength of the edge from input unit j to unit k of stage s, for the diagram: the
  // sum of the weights that read j (the answer to a constant 1 on unit j, borders aside)
  function edgeMatrix(s) {
    const out = s.units, inU = s.inUnits, M = new Float64Array(out * inU);
    const blk = s.kind === "linear" ? s.inSize / inU : s.kh * s.kw;
    for (let k = 0; k < out; k++) {
      for (let j = 0; j < inU; j++) {
        let sum = 0;
        const base = (k * inU + j) * blk;
        for (let p = 0; p < blk; p++) sum += s.W[base + p];
        M[k * inU + j] = sum;
      }
    }
    return M;
  }

  // ---------------------------------------------------------------------------------------
  // a set of points pushed through the network under a node state
  //
  // Z[s] holds a stage's affine output, chainOut[s][k] the output of its chain op k, E[s] what
  // the next stage reads. An update recomputes from the first stage whose inputs changed; when
  // only a few units of a stage changed, the next Z gets a correction per changed unit
  // (Z += affine(delta e_j), a rank-one update for a Linear's feature) instead of a full pass.

  class Field {
    constructor(x, n, labels, ownMeans) {
      this.n = n;
      this.labels = labels;
      this.ownMeans = ownMeans; // the data field takes the means; the grid reuses them
      this.Z = STAGES.map((s) => new Float64Array(n * s.outSize));
      this.chainOut = STAGES.map((s) => s.chain.map((op) => new Float64Array(n * op.C * op.Pout)));
      this.E = STAGES.slice(0, L).map((s) => new Float64Array(n * s.units * s.qPos));
      this.hold = STAGES.slice(0, L).map((s) => new Float64Array(s.units * s.qPos));
      this.means = new Float64Array(H);
      this.c = new Float64Array(H);
      this.prevOn = null;
      this.F = null; // logits [n, C]
      this.version = 0;
      this.cache = {};
      affine(STAGES[0], x, n, this.Z[0]);
    }

    input(s, k) { return k === 0 ? this.Z[s] : this.chainOut[s][k - 1]; } // of chain op k
    units(s) { return this.input(s, STAGES[s].unitAt); }
    out(s) { return this.input(s, STAGES[s].chain.length); } // Q: where the next stage reads

    run(s) {
      STAGES[s].chain.forEach((op, k) => apply(op, this.input(s, k), this.n, this.chainOut[s][k]));
    }

    update(on, compensate, consts) {
      const n = this.n;
      let dirty = this.prevOn === null; // Z[s] changed since the last update
      const c = new Float64Array(H);
      for (let s = 0; s < L; s++) {
        const st = STAGES[s], h = st.units, o = OFFSET[s], qp = st.qPos, E = this.E[s];
        if (dirty) {
          this.run(s);
          if (this.ownMeans) channelMeans(this.units(s), n, h, st.unitPos, this.means, o);
        }
        for (let j = 0; j < h; j++) c[o + j] = compensate ? (consts || this.means)[o + j] : 0;
        const hold = this.hold[s], Q = this.out(s);
        // the held maps enter every unit's gradient (Q - hold), so they follow c even in a
        // stage whose outputs did not change (compensation switched with no unit of it off)
        holdMaps(st, c, o, hold);
        let changed = null;
        if (!dirty) {
          changed = [];
          for (let j = 0; j < h; j++) {
            const was = this.prevOn[o + j], is = on[o + j];
            if (was !== is || (!is && c[o + j] !== this.c[o + j])) changed.push(j);
          }
          if (changed.length === 0) continue;
        }
        if (changed && 4 * changed.length <= h) {
          const D = new Float64Array(n * qp);
          for (const j of changed) {
            for (let g = 0; g < n; g++) {
              for (let p = 0; p < qp; p++) {
                const t = (g * h + j) * qp + p, v = on[o + j] ? Q[t] : hold[j * qp + p];
                D[g * qp + p] = v - E[t];
                E[t] = v;
              }
            }
            addChannel(STAGES[s + 1], j, D, n, this.Z[s + 1]);
          }
        } else if (qp === 1) { // a Linear's features (or channels pooled to one position)
          for (let g = 0, t = 0; g < n; g++) {
            for (let j = 0; j < h; j++, t++) E[t] = on[o + j] ? Q[t] : hold[j];
          }
          affine(STAGES[s + 1], E, n, this.Z[s + 1]);
        } else {
          for (let g = 0; g < n; g++) {
            for (let j = 0; j < h; j++) {
              const t = (g * h + j) * qp;
              if (on[o + j]) for (let p = 0; p < qp; p++) E[t + p] = Q[t + p];
              else for (let p = 0; p < qp; p++) E[t + p] = hold[j * qp + p];
            }
          }
          affine(STAGES[s + 1], E, n, this.Z[s + 1]);
        }
        dirty = true;
      }
      if (dirty || this.F === null) {
        this.run(L);
        this.F = this.out(L);
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

    // d CE_g / d Z[s] (per point): from the logits (s = L) or from d CE_g / d E[s], which
    // reaches Q[s] where a unit is on, back through the stage's chain
    dZ(s) {
      const key = "dZ" + s;
      if (this.cache[key]) return this.cache[key];
      const n = this.n, st = STAGES[s];
      let G;
      if (s === L) {
        G = this.softmax();
        for (let g = 0; g < n; g++) G[g * C + this.labels[g]] -= 1;
      } else {
        const dE = this.dE(s), h = st.units, o = OFFSET[s], qp = st.qPos;
        G = new Float64Array(dE.length);
        for (let g = 0; g < n; g++) {
          for (let j = 0; j < h; j++) {
            if (!this.on[o + j]) continue;
            for (let t = (g * h + j) * qp, p = 0; p < qp; p++) G[t + p] = dE[t + p];
          }
        }
      }
      for (let k = st.chain.length - 1; k >= 0; k--) G = back(st.chain[k], this.input(s, k), G, n);
      return (this.cache[key] = G);
    }

    // d CE_g / d E[s] for every unit of hidden stage s (per point and position)
    dE(s) {
      const key = "dE" + s;
      if (this.cache[key]) return this.cache[key];
      return (this.cache[key] = affineBack(STAGES[s + 1], this.dZ(s + 1), this.n, 0, HID[s]));
    }

    // d CE_g / d m_j at every point, with e_j = hold_j + m_j (q_j - hold_j) (hold fixed)
    pointGradient(node) {
      const s = LAYER_OF[node], j = node - OFFSET[s], h = HID[s], qp = STAGES[s].qPos, n = this.n;
      const dE = this.cache["dE" + s] || null;
      const col = dE ? null : affineBack(STAGES[s + 1], this.dZ(s + 1), n, j, j + 1);
      const Q = this.out(s), hold = this.hold[s], out = new Float64Array(n);
      for (let g = 0; g < n; g++) {
        let sum = 0;
        for (let p = 0; p < qp; p++) {
          const d = dE ? dE[(g * h + j) * qp + p] : col[g * qp + p];
          sum += d * (Q[(g * h + j) * qp + p] - hold[j * qp + p]);
        }
        out[g] = sum;
      }
      return out;
    }

    // d mean CE / d m_j for one unit (what the tooltip shows): one input channel's backward
    unitGradient(node) {
      const key = "unit" + node;
      if (this.cache[key] === undefined) {
        const g = this.pointGradient(node);
        let sum = 0;
        for (let i = 0; i < g.length; i++) sum += g[i];
        this.cache[key] = sum / this.n;
      }
      return this.cache[key];
    }

    // d mean CE / d m for every unit (prunelab.ablation.mask_losses's gradient in plain mode)
    meanGradient() {
      if (this.cache.meanGradient) return this.cache.meanGradient;
      const out = new Float64Array(H), n = this.n;
      for (let s = 0; s < L; s++) {
        const dE = this.dE(s), h = HID[s], o = OFFSET[s], qp = STAGES[s].qPos;
        const Q = this.out(s), hold = this.hold[s];
        for (let g = 0; g < n; g++) {
          for (let j = 0; j < h; j++) {
            let sum = 0;
            for (let p = 0; p < qp; p++) {
              const t = (g * h + j) * qp + p;
              sum += dE[t] * (Q[t] - hold[j * qp + p]);
            }
            out[o + j] += sum;
          }
        }
      }
      for (let t = 0; t < H; t++) out[t] /= n;
      return (this.cache.meanGradient = out);
    }
  }

  // out[o + j]: the mean of unit j over the n points and its P positions
  function channelMeans(U, n, h, P, out, o) {
    for (let j = 0; j < h; j++) out[o + j] = 0;
    for (let g = 0; g < n; g++) {
      for (let j = 0; j < h; j++) {
        let sum = 0;
        for (let p = 0, t = (g * h + j) * P; p < P; p++) sum += U[t + p];
        out[o + j] += sum;
      }
    }
    for (let j = 0; j < h; j++) out[o + j] /= n * P;
  }

  return { decode, stages: STAGES, hidden: HID, offset: OFFSET, H, layerOf: LAYER_OF, Field,
    edgeMatrix };
};
