// The front-end of bertlab.viz's attention views: one ES module, four renderers.
//
// anywidget loads this file (no build step, nothing from a CDN) and calls render() once per view.
// The kernel sends the numbers once, as float32 bytes: `weights` (L, H, T, T) for the heatmap,
// head and model views, `query_vectors` and `key_vectors` (L, H, T, D) for the neuron view. Only
// the small settings (layer, head, query, heads) travel after that, and every change is drawn
// here, at once, without a round trip to the kernel.
//
// After each redraw a view sets data-* attributes on its root element (data-layer, data-head,
// data-query, data-hover, and data-drawn, a counter): what the browser test waits for and reads.

// ------------------------------------------------------------------ colours and numbers

// matplotlib's "Blues" (weights, 0..1) and "RdBu_r" (signed entries), sampled at even steps.
const BLUES = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5",
  "#08519c", "#08306b"];
const RDBU_R = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7",
  "#f4a582", "#d6604d", "#b2182b", "#67001f"];
// One colour per head in the head view (matplotlib's tab10, then tab10's light shades).
const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
  "#c5b0d5", "#c49c94"];

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const BLUES_RGB = BLUES.map(rgb);
const RDBU_R_RGB = RDBU_R.map(rgb);

/** The colour at t in [0, 1] along a list of [r, g, b] stops. */
function ramp(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const [a, b] = [stops[i], stops[i + 1]];
  return `rgb(${[0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f)).join(",")})`;
}
const weightColour = (w) => ramp(BLUES_RGB, w);
const signedColour = (v, limit) => ramp(RDBU_R_RGB, 0.5 + (0.5 * v) / limit);
/** Text that stays readable on a cell of that colour: white on the dark ends. */
const weightText = (w) => (w > 0.55 ? "white" : "black");
const signedText = (v, limit) => (Math.abs(v / limit) > 0.6 ? "white" : "black");

/** A binary trait as a Float32Array. The kernel sends a DataView; a notebook's saved widget
 * state may give an ArrayBuffer or a typed array. Copied, so alignment never matters. */
function floats(value) {
  if (value instanceof DataView || ArrayBuffer.isView(value)) {
    const bytes = value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
    return new Float32Array(bytes);
  }
  if (value instanceof ArrayBuffer) return new Float32Array(value.slice(0));
  return Float32Array.from(value || []);
}

const fixed2 = (v) => (Math.abs(v) < 0.005 ? 0 : v).toFixed(2); // no "-0.00"

// ------------------------------------------------------------------ small DOM helpers

/** document.createElement with attributes ("class", "text", data-*, anything else) and children. */
function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") element.textContent = value;
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

/** A <select> of 0..count-1 with a label; calls onChange(index) when the reader picks one. */
function menu(label, count, onChange) {
  const select = h("select", { class: `bl-${label}`, "aria-label": label },
    Array.from({ length: count }, (_, i) => h("option", { value: String(i), text: String(i) })));
  select.addEventListener("change", () => onChange(Number(select.value)));
  return { element: h("label", { class: "bl-menu" }, [`${label} `, select]), select };
}

/** A canvas of css size width x height, sharp on high-density screens; returns its context. */
function sizeCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

/** A horizontal colour bar: a gradient between two labels, and what it measures. */
function colourBar(stops, low, high, label) {
  const bar = h("span", { class: "bl-bar-gradient" });
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const lowLabel = h("span", { text: low });
  const highLabel = h("span", { text: high });
  const element = h("div", { class: "bl-bar" }, [lowLabel, bar, highLabel,
    h("span", { class: "bl-bar-label", text: label })]);
  return { element, set: (lo, hi) => { lowLabel.textContent = lo; highLabel.textContent = hi; } };
}

/** Sends the changed settings to the kernel. Without one (a saved notebook opened from its
 * widget state) there is nowhere to send them; the view has redrawn already. */
function save(model) {
  try {
    model.save_changes();
  } catch (error) {
    console.debug("bertlab.viz: no kernel to tell of the change", error);
  }
}

/** Marks a redraw on the root element: the browser test waits for data-drawn to change. */
function drawn(root, state) {
  for (const [name, value] of Object.entries(state)) root.dataset[name] = String(value);
  root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
}

// ------------------------------------------------------------------ one head as a heatmap

/** A T x T heatmap on a canvas with the tokens on both axes; hover a cell to read its weight.
 * draw(weights, offset) draws the T*T numbers starting at weights[offset]. */
function heatmap(tokens, cell = 22) {
  const T = tokens.length;
  const canvas = h("canvas", { class: "bl-heatmap" });
  const readout = h("div", { class: "bl-readout", text: "hover a cell: query → key: weight" });
  const probe = sizeCanvas(document.createElement("canvas"), 1, 1);
  probe.font = "12px sans-serif";
  const margin = 8 + Math.max(...tokens.map((t) => probe.measureText(t).width));
  const size = margin + T * cell;
  const context = sizeCanvas(canvas, size + 4, size + 4);
  let current = null;
  let hovered = null;

  function paint() {
    const [weights, offset] = current;
    context.clearRect(0, 0, size + 4, size + 4);
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) {
        context.fillStyle = weightColour(weights[offset + i * T + j]);
        context.fillRect(margin + j * cell, margin + i * cell, cell, cell);
      }
    }
    context.font = "12px sans-serif";
    context.fillStyle = getComputedStyle(canvas).color || "black"; // the theme's text colour
    context.textAlign = "right";
    context.textBaseline = "middle";
    tokens.forEach((token, i) => {
      context.fillText(token, margin - 4, margin + (i + 0.5) * cell); // query tokens, left
      context.save(); // key tokens, top, written upwards
      context.translate(margin + (i + 0.5) * cell, margin - 4);
      context.rotate(-Math.PI / 2);
      context.textAlign = "left";
      context.fillText(token, 0, 0);
      context.restore();
    });
    if (hovered) {
      const [i, j] = hovered;
      readout.textContent = `${tokens[i]} → ${tokens[j]}: ${fixed2(weights[offset + i * T + j])}`;
      context.strokeStyle = "#d62728";
      context.lineWidth = 2;
      context.strokeRect(margin, margin + i * cell, T * cell, cell); // the query's row
      context.strokeRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }

  canvas.addEventListener("mousemove", (event) => {
    const box = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - box.left - margin) / cell);
    const i = Math.floor((event.clientY - box.top - margin) / cell);
    if (i < 0 || j < 0 || i >= T || j >= T || !current) return;
    if (hovered && hovered[0] === i && hovered[1] === j) return;
    hovered = [i, j];
    paint();
  });
  canvas.addEventListener("mouseleave", () => { hovered = null; if (current) paint(); });

  return {
    element: h("div", { class: "bl-heatmap-box" }, [canvas, readout]),
    draw(weights, offset) { current = [weights, offset]; paint(); },
  };
}

// ------------------------------------------------------------------ the heatmap view

function renderHeatmap(model, root) {
  const tokens = model.get("tokens");
  const [L, H, T] = model.get("shape");
  const weights = floats(model.get("weights"));
  const layer = menu("layer", L, (v) => { model.set("layer", v); save(model); });
  const head = menu("head", H, (v) => { model.set("head", v); save(model); });
  const title = h("div", { class: "bl-title" });
  const map = heatmap(tokens);
  root.append(h("div", { class: "bl-controls" }, [layer.element, head.element]), title,
    h("div", { class: "bl-caption", text: "row = query (attending), column = key (attended to)" }),
    map.element, colourBar(BLUES, "0", "1", "attention weight").element);

  function draw() {
    const [l, hd] = [model.get("layer"), model.get("head")];
    layer.select.value = String(l);
    head.select.value = String(hd);
    title.textContent = `layer ${l}, head ${hd}`;
    map.draw(weights, (l * H + hd) * T * T);
    drawn(root, { layer: l, head: hd });
  }
  return redrawOnLayerAndHead(model, draw);
}

// Draw now and again whenever the layer or the head changes; returns the cleanup anywidget calls.
function redrawOnLayerAndHead(model, draw) {
  draw();
  model.on("change:layer", draw);
  model.on("change:head", draw);
  return () => { model.off("change:layer", draw); model.off("change:head", draw); };
}

// ------------------------------------------------------------------ the head view

// Lines from every query token (left column) to every key token (right column), one colour per
// head, opacity = weight, drawn on one canvas (as many SVG elements took several times longer to
// paint). What was drawn last is kept on the canvas as `drawnLines`, [head, query, key, weight]
// each, for the browser test to read.
function renderHead(model, root) {
  const tokens = model.get("tokens");
  const [L, H, T] = model.get("shape");
  const weights = floats(model.get("weights"));
  const ROW = 22;
  const GAP = 160; // the width the lines cross
  const height = T * ROW;

  const layer = menu("layer", L, (v) => { model.set("layer", v); save(model); });
  const swatches = Array.from({ length: H }, (_, hd) => {
    const swatch = h("button", { class: "bl-swatch", "data-head": hd, title: `head ${hd}`,
      text: String(hd) });
    swatch.style.setProperty("--colour", HEAD_COLOURS[hd % HEAD_COLOURS.length]);
    return swatch;
  });
  const swatchBox = h("span", { class: "bl-swatches" }, ["heads ", ...swatches]);
  swatchBox.addEventListener("click", (event) => { // a click shows or hides a head
    const swatch = event.target.closest(".bl-swatch");
    if (!swatch) return;
    const hd = Number(swatch.dataset.head);
    const shown = new Set(model.get("heads"));
    if (shown.has(hd)) shown.delete(hd); else shown.add(hd);
    model.set("heads", [...shown].sort((a, b) => a - b));
    save(model);
  });
  swatchBox.addEventListener("dblclick", (event) => { // a double click shows that head alone
    const swatch = event.target.closest(".bl-swatch");
    if (!swatch) return;
    model.set("heads", [Number(swatch.dataset.head)]);
    save(model);
  });
  const all = h("button", { class: "bl-all", text: "all" });
  all.addEventListener("click", () => {
    model.set("heads", Array.from({ length: H }, (_, i) => i));
    save(model);
  });

  const column = (side) => h("div", { class: `bl-token-column bl-${side}-column` },
    tokens.map((token, i) => h("div", { class: `bl-token bl-${side}`, "data-index": i,
      text: token })));
  const left = column("left");
  const right = column("right");
  const canvas = h("canvas", { class: "bl-lines" });
  const context = sizeCanvas(canvas, GAP, height);
  const picture = h("div", { class: "bl-head-lines" }, [left, canvas, right]);

  root.append(h("div", { class: "bl-controls" }, [layer.element, swatchBox, all]),
    h("div", { class: "bl-caption", text: "left: the query tokens, right: the keys they " +
      "attend to, one colour per head. Hover a token to see only its lines; click a head's " +
      "number to show or hide it, double-click for that head alone." }), picture);

  let hover = null; // {side, index} while the mouse is on a token
  const weight = (l, hd, i, j) => weights[((l * H + hd) * T + i) * T + j];

  /** The lines to draw for layer l, heads `shown`, and a hovered token (or null). */
  function linesOf(l, shown, hovered) {
    const lines = [];
    for (const hd of shown) {
      for (let i = 0; i < T; i++) {
        if (hovered && hovered.side === "left" && hovered.index !== i) continue;
        for (let j = 0; j < T; j++) {
          if (hovered && hovered.side === "right" && hovered.index !== j) continue;
          const w = weight(l, hd, i, j);
          if (w >= 0.01) lines.push([hd, i, j, w]); // fainter ones cannot be seen
        }
      }
    }
    return lines;
  }

  function paint(target, lines) {
    target.clearRect(0, 0, GAP, height);
    target.lineWidth = 2;
    for (const [hd, i, j, w] of lines) {
      target.strokeStyle = HEAD_COLOURS[hd % HEAD_COLOURS.length];
      target.globalAlpha = w;
      target.beginPath();
      target.moveTo(0, (i + 0.5) * ROW);
      target.lineTo(GAP, (j + 0.5) * ROW);
      target.stroke();
    }
    target.globalAlpha = 1;
  }

  // Painting a layer's thousands of lines is most of what a layer change costs (the browser
  // rasterizes them after the script is done). So once the view is idle, every layer's picture
  // (all its shown heads, no hover) is painted off screen and kept as a bitmap; a layer change
  // then copies one. A change of heads starts the cache afresh.
  const bitmaps = new Map(); // layer -> ImageBitmap, for the heads in cachedHeads
  let cachedHeads = "";
  let filling = false; // one layer at a time is painted off screen
  function fillCache(shown) {
    const key = shown.join(",");
    if (key !== cachedHeads) { bitmaps.clear(); cachedHeads = key; }
    const next = Array.from({ length: L }, (_, l) => l).find((l) => !bitmaps.has(l));
    if (filling || next === undefined || typeof createImageBitmap !== "function") return;
    filling = true;
    setTimeout(() => {
      const offscreen = document.createElement("canvas");
      paint(sizeCanvas(offscreen, GAP, height), linesOf(next, shown, null));
      createImageBitmap(offscreen).then((bitmap) => {
        filling = false;
        if (cachedHeads === key) bitmaps.set(next, bitmap); // unless the heads changed meanwhile
        fillCache(model.get("heads"));
      });
    }, 50);
  }

  function draw() {
    const l = model.get("layer");
    const shown = model.get("heads");
    layer.select.value = String(l);
    swatches.forEach((swatch, hd) => swatch.classList.toggle("bl-off", !shown.includes(hd)));
    const lines = linesOf(l, shown, hover);
    const bitmap = !hover && cachedHeads === shown.join(",") && bitmaps.get(l);
    if (bitmap) {
      context.clearRect(0, 0, GAP, height);
      context.drawImage(bitmap, 0, 0, GAP, height);
    } else {
      paint(context, lines);
    }
    if (!hover) fillCache(shown);
    canvas.drawnLines = lines;
    // the hovered token in yellow; the tokens across from it shaded by the largest weight shown
    for (const [side, tokenColumn] of [["left", left], ["right", right]]) {
      [...tokenColumn.children].forEach((box, k) => {
        let shade = 0;
        if (hover && hover.side !== side) {
          for (const hd of shown) {
            shade = Math.max(shade, side === "right" ? weight(l, hd, hover.index, k)
              : weight(l, hd, k, hover.index));
          }
        }
        const hovered = hover && hover.side === side && hover.index === k;
        box.style.background = hovered ? "#ffd54f" : shade > 0 ? weightColour(shade) : "";
        box.style.color = shade > 0 ? weightText(shade) : "";
      });
    }
    drawn(root, { layer: l, heads: shown.join(","),
      hover: hover ? `${hover.side} ${hover.index}` : "" });
  }

  picture.addEventListener("mouseover", (event) => {
    const box = event.target.closest(".bl-token");
    if (!box) return;
    const next = { side: box.classList.contains("bl-left") ? "left" : "right",
      index: Number(box.dataset.index) };
    if (hover && hover.side === next.side && hover.index === next.index) return;
    hover = next;
    draw();
  });
  picture.addEventListener("mouseleave", () => { // off the picture: every token's lines again
    if (!hover) return;
    hover = null;
    draw();
  });

  draw();
  model.on("change:layer", draw);
  model.on("change:heads", draw);
  return () => { model.off("change:layer", draw); model.off("change:heads", draw); };
}

// ------------------------------------------------------------------ the model view

// Every head of every layer as a thumbnail, drawn once; the chosen one (layer, head) is drawn
// large beside the grid. Click a thumbnail to choose it.
function renderModel(model, root) {
  const tokens = model.get("tokens");
  const [L, H, T] = model.get("shape");
  const weights = floats(model.get("weights"));
  const pixel = Math.max(1, Math.round(48 / T)); // each weight a pixel x pixel square
  const grid = h("div", { class: "bl-grid" });
  grid.style.gridTemplateColumns = `auto repeat(${H}, ${pixel * T + 4}px)`;
  grid.append(h("span"), ...Array.from({ length: H }, (_, hd) =>
    h("span", { class: "bl-grid-label", text: String(hd) })));
  const thumbs = [];
  for (let l = 0; l < L; l++) {
    grid.append(h("span", { class: "bl-grid-label", text: `layer ${l}` }));
    for (let hd = 0; hd < H; hd++) {
      const thumb = h("canvas", { class: "bl-thumb", "data-layer": l, "data-head": hd,
        title: `layer ${l}, head ${hd}` });
      const context = sizeCanvas(thumb, pixel * T, pixel * T);
      const offset = (l * H + hd) * T * T;
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          context.fillStyle = weightColour(weights[offset + i * T + j]);
          context.fillRect(j * pixel, i * pixel, pixel, pixel);
        }
      }
      grid.append(thumb);
      thumbs.push(thumb);
    }
  }
  grid.addEventListener("click", (event) => {
    const thumb = event.target.closest(".bl-thumb");
    if (!thumb) return;
    model.set("layer", Number(thumb.dataset.layer));
    model.set("head", Number(thumb.dataset.head));
    save(model);
  });
  const title = h("div", { class: "bl-title" });
  const map = heatmap(tokens, Math.max(12, Math.min(22, Math.round(360 / T))));
  root.append(
    h("div", { class: "bl-caption", text: "rows: layers, columns: heads; in each, row = query, " +
      "column = key. Click a head to see it large." }),
    h("div", { class: "bl-model" }, [grid, h("div", {}, [title, map.element])]),
    colourBar(BLUES, "0", "1", "attention weight").element);

  function draw() {
    const [l, hd] = [model.get("layer"), model.get("head")];
    thumbs.forEach((thumb, k) => thumb.classList.toggle("bl-chosen", k === l * H + hd));
    title.textContent = `layer ${l}, head ${hd}`;
    map.draw(weights, (l * H + hd) * T * T);
    drawn(root, { layer: l, head: hd });
  }
  return redrawOnLayerAndHead(model, draw);
}

// ------------------------------------------------------------------ the neuron view

// For the chosen head and query token i: q_i (top), every key k_j, the products q_i × k_j, their
// sums scaled by 1/√d, and the softmax of those. q and k share one colour scale, q × k has its
// own. Everything is computed here from the queries and keys the kernel sent.
function renderNeuron(model, root) {
  const tokens = model.get("tokens");
  const [L, H, T, D] = model.get("shape");
  const queries = floats(model.get("query_vectors"));
  const keys = floats(model.get("key_vectors"));
  const ROW = 20;
  const CELL = Math.max(4, Math.min(10, Math.floor(320 / D))); // width of one vector entry

  const layer = menu("layer", L, (v) => { model.set("layer", v); save(model); });
  const head = menu("head", H, (v) => { model.set("head", v); save(model); });
  const title = h("div", { class: "bl-title" });
  const choose = (j) => { model.set("query", j); save(model); };

  const tokenColumn = h("div", { class: "bl-col bl-token-col" }, tokens.map((token, j) =>
    h("button", { class: "bl-token", "data-index": j, title: "click: make this the query",
      text: token })));
  tokenColumn.addEventListener("click", (event) => {
    const button = event.target.closest(".bl-token");
    if (button) choose(Number(button.dataset.index));
  });
  const strip = (rows) => {
    const canvas = h("canvas", { class: "bl-strip" });
    return { canvas, context: sizeCanvas(canvas, D * CELL, rows * ROW) };
  };
  const qStrip = strip(1);
  const kStrip = strip(T);
  const pStrip = strip(T);
  for (const { canvas } of [kStrip, pStrip]) { // a click on a row of k or q × k: that token
    canvas.addEventListener("click", (event) => {
      const j = Math.floor((event.clientY - canvas.getBoundingClientRect().top) / ROW);
      if (j >= 0 && j < T) choose(j);
    });
  }
  const numberColumn = () => Array.from({ length: T }, () => h("div", { class: "bl-number" }));
  const scoreCells = numberColumn();
  const weightCells = numberColumn();
  const qLabel = h("div", { class: "bl-head-label" });
  const vectorBar = colourBar(RDBU_R, "", "", "q, k entries");
  const productBar = colourBar(RDBU_R, "", "", "q × k entries");
  // Every column: a top row (the query vector, above the keys; elsewhere empty), a heading,
  // then one row per token, so that rows line up across the columns.
  const column = (top, heading, body, bar = "") => h("div", { class: "bl-col" },
    [top, h("div", { class: "bl-head-label", text: heading }), body, bar]);
  const empty = () => h("div", { class: "bl-top" });
  const check = h("div", { class: "bl-caption bl-check" });

  root.append(
    h("div", { class: "bl-controls" }, [layer.element, head.element,
      h("span", { class: "bl-hint", text: "click a token to make it the query" })]),
    title,
    h("div", { class: "bl-neuron" }, [
      column(empty(), "", tokenColumn),
      column(h("div", { class: "bl-top" }, [qLabel, qStrip.canvas]), "keys k", kStrip.canvas,
        vectorBar.element),
      column(empty(), "q × k (elementwise)", pStrip.canvas, productBar.element),
      column(empty(), "q·k/√d", h("div", { class: "bl-numbers" }, scoreCells)),
      column(empty(), "softmax", h("div", { class: "bl-numbers" }, weightCells),
        colourBar(BLUES, "0", "1", "weight").element),
    ]),
    check);

  function paintStrip({ context }, values, rows, limit) {
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < D; c++) {
        context.fillStyle = signedColour(values[r * D + c], limit);
        context.fillRect(c * CELL, r * ROW, CELL, ROW - 1);
      }
    }
  }

  function draw() {
    const [l, hd, i] = [model.get("layer"), model.get("head"), model.get("query")];
    layer.select.value = String(l);
    head.select.value = String(hd);
    const base = (l * H + hd) * T * D; // this head's (T, D) block
    const q = queries.subarray(base + i * D, base + (i + 1) * D); // (D,)
    const k = keys.subarray(base, base + T * D); // (T, D)
    const products = new Float32Array(T * D);
    const scores = new Float64Array(T);
    for (let j = 0; j < T; j++) {
      let sum = 0;
      for (let c = 0; c < D; c++) {
        products[j * D + c] = q[c] * k[j * D + c];
        sum += products[j * D + c];
      }
      scores[j] = sum / Math.sqrt(D);
    }
    const top = Math.max(...scores);
    const exps = scores.map((v) => Math.exp(v - top)); // softmax, safe from overflow
    const total = exps.reduce((a, b) => a + b, 0);
    const softmax = exps.map((v) => v / total);

    let limit = 0;
    for (const v of q) limit = Math.max(limit, Math.abs(v));
    for (const v of k) limit = Math.max(limit, Math.abs(v));
    let productLimit = 0;
    for (const v of products) productLimit = Math.max(productLimit, Math.abs(v));
    const scoreLimit = Math.max(...scores.map(Math.abs)) || 1;
    paintStrip(qStrip, q, 1, limit || 1);
    paintStrip(kStrip, k, T, limit || 1);
    paintStrip(pStrip, products, T, productLimit || 1);
    vectorBar.set(fixed2(-limit), fixed2(limit));
    productBar.set(fixed2(-productLimit), fixed2(productLimit));
    for (let j = 0; j < T; j++) {
      scoreCells[j].textContent = fixed2(scores[j]);
      scoreCells[j].style.background = signedColour(scores[j], scoreLimit);
      scoreCells[j].style.color = signedText(scores[j], scoreLimit);
      weightCells[j].textContent = fixed2(softmax[j]);
      weightCells[j].style.background = weightColour(softmax[j]);
      weightCells[j].style.color = weightText(softmax[j]);
      tokenColumn.children[j].classList.toggle("bl-query", j === i);
    }
    qLabel.textContent = `query q: '${tokens[i]}'`;
    title.textContent = `layer ${l}, head ${hd}: how '${tokens[i]}' attends`;
    const best = softmax.indexOf(Math.max(...softmax));
    check.textContent = `Each row of q × k, summed and divided by √${D}, is its q·k/√d; the ` +
      `softmax of that column sums to 1: it is this head's attention from '${tokens[i]}', ` +
      `most of it to '${tokens[best]}' (${fixed2(softmax[best])}).`;
    drawn(root, { layer: l, head: hd, query: i });
  }
  draw();
  for (const name of ["layer", "head", "query"]) model.on(`change:${name}`, draw);
  return () => {
    for (const name of ["layer", "head", "query"]) model.off(`change:${name}`, draw);
  };
}

// ------------------------------------------------------------------ entry point

const RENDERERS = { heatmap: renderHeatmap, head: renderHead, model: renderModel,
  neuron: renderNeuron };

function render({ model, el }) {
  const root = h("div", { class: `bl-view bl-${model.get("view")}-view`,
    "data-view": model.get("view") });
  el.append(root);
  return RENDERERS[model.get("view")](model, root);
}

export default { render };
