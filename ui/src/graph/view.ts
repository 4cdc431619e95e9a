// Graph view: filters (process, node kind, edge kind), search, focus mode,
// an ELK layered layout and an SVG rendering with pan and zoom.
//
// Rendering builds one SVG string per layout (fast for thousands of nodes);
// selection, highlight and search only toggle classes afterwards.  When zoomed
// far out, text is hidden by a level-of-detail class so panning stays smooth.

import type { App, Change } from "../app";
import { errorText } from "../app";
import { h, replace, esc } from "../dom";
import { fmtCount } from "../format";
import { EDGE_STYLES, edgeStyle, kindStyle, shapePath } from "../kinds";
import { type GEdge, type GNode, type GraphIndex, waitChain } from "../model";
import { isFull, subtitle } from "../summary";
import { EDGE_KINDS } from "../types";
import { type LayoutResult, type Point, layoutGraph } from "./layout";

/** Zoom below which node subtitles and edge labels, then all text, are hidden. */
const LOD_MID = 0.55;
const LOD_LOW = 0.22;
/** Above this many visible nodes, look-alike leaf nodes fold into groups. */
const AGGREGATE_ABOVE = 300;
/** Smallest group worth folding. */
const AGGREGATE_MIN = 8;
/** Above this many visible nodes, selection and search do not dim the rest. */
const DIM_LIMIT = 400;
const NODE_W = 212;
const NODE_H = 38;
const SVG_NS = "http://www.w3.org/2000/svg";

interface Visible {
  nodes: GNode[];
  edges: GEdge[];
  key: string;
}

interface Filters {
  hiddenProcs: Set<string>;
  hiddenKinds: Set<string>;
  hiddenEdgeKinds: Set<string>;
}

export class GraphView {
  readonly el: HTMLElement;
  private readonly side = h("div", { class: "graph-side" });
  private readonly canvas = h("div", { class: "graph-canvas", tabIndex: 0, attrs: { "data-testid": "graph-canvas" } });
  private readonly overlay = h("div", { class: "graph-overlay" });
  private readonly status = h("span", { class: "graph-status muted", attrs: { "data-testid": "graph-status" } });
  private readonly search = h("input", {
    type: "search",
    class: "input",
    placeholder: "Search name or id  ( / )",
    attrs: { "data-testid": "graph-search" },
  });
  private readonly searchCount = h("span", { class: "muted small search-count" });
  private readonly focusBtn = h("button", { class: "btn small toggle", attrs: { "data-testid": "focus-toggle" } });
  private readonly depthInput = h("input", {
    type: "number",
    min: "1",
    max: "9",
    value: "2",
    class: "input depth",
    title: "Focus depth (hops from the focused nodes)",
    attrs: { "data-testid": "focus-depth" },
  });
  private svg: SVGSVGElement | null = null;
  private viewport: SVGGElement | null = null;
  private filters: Filters = { hiddenProcs: new Set(), hiddenKinds: new Set(), hiddenEdgeKinds: new Set() };
  private layoutCache = new Map<string, LayoutResult>();
  private shown: { key: string; layout: LayoutResult; visible: Visible } | null = null;
  private nodeEls = new Map<string, SVGGElement>();
  /** Aggregate node id → the member ids it stands for (big graphs only). */
  private groups = new Map<string, string[]>();
  private cullables: { el: Element; x: number; y: number; w: number; h: number; on: boolean }[] = [];
  private edgeEls = new Map<string, SVGPathElement>();
  private tx = 0;
  private ty = 0;
  private k = 1;
  /** The transform the SVG was last painted with (see previewTransform). */
  private committed = { k: 1, tx: 0, ty: 0 };
  private commitTimer: number | null = null;
  /** Canvas size, kept by a ResizeObserver so no handler forces a layout. */
  private size = { width: 0, height: 0 };
  private layoutSeq = 0;
  private matches: string[] = [];
  private matchIdx = -1;
  private pendingCenter: string | null = null;
  private fitOnRender = true;
  private focusKey = "";
  private active = false;

  constructor(private readonly app: App) {
    const toolbar = h(
      "div",
      { class: "graph-toolbar" },
      this.search,
      this.searchCount,
      h("span", { class: "sep" }),
      this.focusBtn,
      h("label", { class: "muted small" }, "depth ", this.depthInput),
      h("span", { class: "sep" }),
      h("button", { class: "btn small", title: "Fit the graph to the window (f)", onclick: () => this.fit() }, "fit"),
      h("button", { class: "btn small", title: "Zoom in (+)", onclick: () => this.zoomBy(1.25) }, "+"),
      h("button", { class: "btn small", title: "Zoom out (-)", onclick: () => this.zoomBy(0.8) }, "−"),
      h("span", { class: "spacer" }),
      this.status,
    );
    this.el = h(
      "section",
      { class: "view view-graph" },
      this.side,
      h("div", { class: "graph-main" }, toolbar, h("div", { class: "graph-stage" }, this.canvas, this.overlay)),
    );
    this.search.addEventListener("input", () => this.applySearch(false));
    this.search.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        this.nextMatch(ev.shiftKey ? -1 : 1);
      } else if (ev.key === "Escape") {
        this.search.value = "";
        this.applySearch(false);
        this.canvas.focus();
      }
    });
    this.focusBtn.addEventListener("click", () => this.toggleFocus());
    this.depthInput.addEventListener("change", () => {
      const d = Math.max(1, Math.min(9, Number(this.depthInput.value) || 2));
      if (app.focus) app.setFocus({ ...app.focus, depth: d });
    });
    this.installPanZoom();
    new ResizeObserver((entries) => {
      const r = entries[0]?.contentRect;
      if (r) this.size = { width: r.width, height: r.height };
    }).observe(this.canvas);
    this.canvas.addEventListener("keydown", (ev) => this.onKey(ev));
    app.subscribe((c) => this.update(c));
  }

  setActive(active: boolean): void {
    this.active = active;
    if (active) this.refresh();
  }

  focusSearch(): void {
    this.search.focus();
    this.search.select();
  }

  private onKey(ev: KeyboardEvent): void {
    if (ev.key === "f") this.fit();
    else if (ev.key === "+" || ev.key === "=") this.zoomBy(1.25);
    else if (ev.key === "-") this.zoomBy(0.8);
    else if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") this.walk(ev.key === "ArrowRight" ? 1 : -1);
    else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") this.sibling(ev.key === "ArrowDown" ? 1 : -1);
    else if (ev.key === "Enter" && this.app.selected) {
      this.app.setFocus({ roots: [this.app.selected], depth: Math.max(1, Number(this.depthInput.value) || 2) });
    } else return;
    ev.preventDefault();
  }

  /** Edges from the selection to visible nodes, in the reading direction. */
  private steps(id: string, dir: number): string[] {
    const g = this.app.graph;
    if (!g || !this.shown) return [];
    const shown = new Set(this.shown.visible.nodes.map((n) => n.id));
    const out: string[] = [];
    // Right: what it waits on (a held resource leads to its holder), then the rest.
    const fwd = dir > 0
      ? [...g.outOf(id, "needs").map((e) => e.dst), ...g.inOf(id, "holds").map((e) => e.src), ...g.outOf(id).map((e) => e.dst)]
      : [...g.inOf(id, "needs").map((e) => e.src), ...g.outOf(id, "holds").map((e) => e.dst), ...g.inOf(id).map((e) => e.src)];
    for (const n of fwd) if (shown.has(n) && n !== id && !out.includes(n)) out.push(n);
    return out;
  }

  private walkFrom: { from: string; dir: number; options: string[] } | null = null;

  /** ←/→ move the selection along the wait-for chain. */
  private walk(dir: number): void {
    const sel = this.app.selected;
    if (!sel) {
      const first = this.shown?.visible.nodes[0];
      if (first) this.app.select(first.id);
      return;
    }
    const options = this.steps(sel, dir);
    const next = options[0];
    if (!next) return;
    this.walkFrom = { from: sel, dir, options };
    this.pendingCenter = next;
    this.app.select(next);
  }

  /** ↑/↓ try the other nodes reachable by the last ←/→ step. */
  private sibling(delta: number): void {
    const w = this.walkFrom;
    const sel = this.app.selected;
    if (!w || !sel) return;
    const i = w.options.indexOf(sel);
    const next = w.options[(i + delta + w.options.length) % w.options.length];
    if (!next || next === sel) return;
    this.pendingCenter = next;
    this.app.select(next);
  }

  update(changes: Set<Change>): void {
    if (changes.has("data")) {
      this.layoutCache.clear();
      // A newer snapshot (live refresh) keeps the view where the user put it:
      // unchanged islands keep their places (the worker caches them).
      if (!this.shown) this.fitOnRender = true;
      this.renderSide();
    }
    if (changes.has("focus")) {
      const key = this.app.focus ? `${this.app.focus.roots.join(",")}@${this.app.focus.depth}` : "";
      if (key !== this.focusKey) {
        this.focusKey = key;
        this.fitOnRender = true;
      }
      this.renderFocusControls();
    }
    if (changes.has("selection") && this.app.selected) {
      this.pendingCenter = this.app.selected;
    }
    if (!this.active) return;
    // A selection can pull a node out of its group, so it may change the layout.
    if (changes.has("data") || changes.has("focus") || changes.has("view") || changes.has("selection")) this.refresh();
  }

  // ---- visible subgraph -------------------------------------------------------

  private visible(g: GraphIndex): Visible {
    const f = this.filters;
    const base = new Set<string>();
    for (const n of g.nodes.values()) {
      if (f.hiddenProcs.has(n.proc_key) || f.hiddenKinds.has(n.kind)) continue;
      base.add(n.id);
    }
    let edges = g.edges.filter((e) => !f.hiddenEdgeKinds.has(e.kind) && base.has(e.src) && base.has(e.dst));
    let ids = base;
    const focus = this.app.focus;
    let focusKey = "";
    if (focus) {
      const roots = focus.roots.filter((r) => base.has(r));
      focusKey = `${roots.join(",")}@${focus.depth}`;
      const adj = new Map<string, string[]>();
      for (const e of edges) {
        (adj.get(e.src) ?? adj.set(e.src, []).get(e.src))?.push(e.dst);
        (adj.get(e.dst) ?? adj.set(e.dst, []).get(e.dst))?.push(e.src);
      }
      const dist = new Map<string, number>(roots.map((r) => [r, 0]));
      let frontier = roots;
      for (let d = 1; d <= focus.depth && frontier.length; d++) {
        const next: string[] = [];
        for (const id of frontier) {
          for (const m of adj.get(id) ?? []) {
            if (!dist.has(m)) {
              dist.set(m, d);
              next.push(m);
            }
          }
        }
        frontier = next;
      }
      ids = new Set(dist.keys());
      edges = edges.filter((e) => ids.has(e.src) && ids.has(e.dst));
    }
    let nodes = [...ids].map((id) => g.nodes.get(id)).filter((n): n is GNode => n !== undefined);
    let aggKey = "";
    if (nodes.length > AGGREGATE_ABOVE) {
      const agg = aggregate(nodes, edges, this.keepApart());
      nodes = agg.nodes;
      edges = agg.edges;
      this.groups = agg.groups;
      aggKey = [...agg.groups].map(([id, m]) => `${id}:${m.length}`).join(",");
    } else this.groups = new Map();
    const key = [
      g.snapshot.snapshot_id,
      [...f.hiddenProcs].sort().join(","),
      [...f.hiddenKinds].sort().join(","),
      [...f.hiddenEdgeKinds].sort().join(","),
      focusKey,
      aggKey,
    ].join("|");
    return { nodes, edges, key };
  }

  /** Nodes never folded into a group: the selection, highlighted and focused nodes. */
  private keepApart(): Set<string> {
    const app = this.app;
    const keep = new Set<string>(app.highlight);
    if (app.selected) keep.add(app.selected);
    for (const r of app.focus?.roots ?? []) keep.add(r);
    return keep;
  }

  // ---- layout + render --------------------------------------------------------

  private refresh(): void {
    const g = this.app.graph;
    if (!g) {
      this.clearCanvas(this.app.loading ? "Loading snapshot…" : this.app.error ?? "No snapshot.");
      return;
    }
    const vis = this.visible(g);
    if (this.shown?.key === vis.key) {
      this.applySelection(true);
      return;
    }
    const cached = this.layoutCache.get(vis.key);
    if (cached) {
      this.render(vis, cached);
      return;
    }
    const seq = ++this.layoutSeq;
    const what = `Laying out ${fmtCount(vis.nodes.length)} nodes, ${fmtCount(vis.edges.length)} edges…`;
    this.setOverlay(what, true);
    const r = this.canvasSize();
    const aspect = r.width > 0 && r.height > 0 ? Math.max(0.8, Math.min(3, r.width / r.height)) : 1.8;
    layoutGraph(
      vis.nodes.map((n) => ({ id: n.id, width: NODE_W, height: NODE_H })),
      vis.edges.map((e) => ({ id: e.key, src: e.src, dst: e.dst, kind: e.kind, reversed: e.kind === "holds" })),
      aspect,
      (share) => {
        if (seq === this.layoutSeq) this.setOverlay(`${what} ${Math.round(share * 100)}%`, true);
      },
    )
      .then((layout) => {
        if (seq !== this.layoutSeq) return;
        this.layoutCache.set(vis.key, layout);
        if (this.layoutCache.size > 12) {
          const first = this.layoutCache.keys().next().value;
          if (first !== undefined) this.layoutCache.delete(first);
        }
        this.render(vis, layout);
      })
      .catch((err: unknown) => {
        if (seq !== this.layoutSeq) return;
        this.setOverlay(`Layout failed: ${errorText(err)}`, false);
      });
  }

  private clearCanvas(message: string): void {
    replace(this.canvas);
    this.svg = null;
    this.viewport = null;
    this.shown = null;
    this.nodeEls.clear();
    this.edgeEls.clear();
    this.setOverlay(message, false);
  }

  private setOverlay(message: string | null, busy: boolean): void {
    if (message === null) {
      this.overlay.hidden = true;
      return;
    }
    this.overlay.hidden = false;
    replace(this.overlay, h("div", { class: "overlay-box" }, busy ? h("span", { class: "spinner" }) : null, message));
  }

  private render(vis: Visible, layout: LayoutResult): void {
    const t0 = performance.now();
    const parts: string[] = [];
    parts.push(`<svg xmlns="${SVG_NS}" class="graph-svg" width="100%" height="100%">`);
    parts.push("<defs>");
    for (const kind of Object.keys(EDGE_STYLES)) {
      const s = edgeStyle(kind);
      parts.push(
        `<marker id="arr-${kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="${kind === "needs" ? 5 : 6}" markerHeight="${kind === "needs" ? 5 : 6}" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="${s.color}"/></marker>`,
      );
    }
    parts.push(`<marker id="arr-other" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#9ca3af"/></marker>`);
    parts.push("</defs>");
    parts.push(`<g class="vp">`);
    // Edges under nodes; needs edges last so they sit on top of the others.
    const order = ["touches", "spawned", "closed_by", "holds", "needs"];
    const sorted = vis.edges.slice().sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
    parts.push(`<g class="edges">`);
    for (const e of sorted) {
      const pts = layout.edges.get(e.key);
      if (!pts || pts.length < 2) continue;
      const s = edgeStyle(e.kind);
      const d = edgePath(pts);
      const marker = EDGE_STYLES[e.kind] ? e.kind : "other";
      parts.push(
        `<path class="edge e-${esc(e.kind)}${layout.between.has(e.key) && e.kind !== "needs" && e.kind !== "holds" ? " far" : ""}" data-key="${esc(e.key)}" d="${d}" stroke="${s.color}" stroke-width="${s.width}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""} marker-end="url(#arr-${marker})"><title>${esc(`${e.src} ${e.kind} ${e.dst}${e.attrs["op"] ? ` (${String(e.attrs["op"])})` : ""}`)}</title></path>`,
      );
    }
    parts.push("</g><g class=\"edge-labels\">");
    // What a waiter is doing (send, acquire, await, …) at the middle of its needs edge.
    for (const e of sorted) {
      if (e.kind !== "needs") continue;
      const op = e.attrs["op"];
      const pts = layout.edges.get(e.key);
      if (typeof op !== "string" || !pts || pts.length < 2) continue;
      const m = midpoint(pts);
      parts.push(`<text class="elabel off" x="${m.x.toFixed(1)}" y="${(m.y - 4).toFixed(1)}">${esc(op)}</text>`);
    }
    parts.push("</g><g class=\"nodes\">");
    for (const n of vis.nodes) {
      const b = layout.nodes.get(n.id);
      if (!b) continue;
      const st = kindStyle(n.kind);
      const sub = subtitle(n.kind, n.attrs);
      const members = this.groups.get(n.id);
      const stuck = this.isStuck(members?.[0] ?? n.id);
      const cls = `node off k-${esc(n.kind)}${n.ghost ? " ghost" : ""}${isFull(n.attrs) ? " full" : ""}${stuck ? " stuck" : ""}${members ? " agg" : ""}`;
      const title = members
        ? `${members.length} ${n.kind} nodes with the same edges, shown as one.\nClick to take one out; search finds each.`
        : `${n.label}\n${n.id} · ${n.proc_key}${sub ? `\n${sub}` : ""}`;
      parts.push(
        `<g class="${cls}" data-id="${esc(n.id)}" transform="translate(${b.x.toFixed(1)},${b.y.toFixed(1)})" style="--kc:${st.color}">` +
          `<title>${esc(title)}</title>` +
          (members ? `<path class="shape stack" transform="translate(5,5)" d="${shapePath(st.shape, NODE_W, NODE_H)}"/>` : "") +
          `<path class="shape" d="${shapePath(st.shape, NODE_W, NODE_H)}"/>` +
          `<circle class="icon" cx="17" cy="${NODE_H / 2}" r="11"/>` +
          `<text class="glyph" x="17" y="${NODE_H / 2 + 4}">${esc(st.glyph)}</text>` +
          `<text class="label" x="34" y="16">${esc(truncate(n.label, 26))}</text>` +
          `<text class="sub" x="34" y="30">${esc(truncate(sub ? `${n.kind} · ${sub}` : n.kind, 32))}</text>` +
          `</g>`,
      );
    }
    parts.push("</g></g></svg>");
    this.canvas.innerHTML = parts.join("");
    this.svg = this.canvas.querySelector("svg");
    this.svg?.classList.toggle("dim-others", vis.nodes.length <= DIM_LIMIT);
    this.viewport = this.canvas.querySelector("g.vp");
    this.nodeEls.clear();
    this.edgeEls.clear();
    for (const el of this.canvas.querySelectorAll<SVGGElement>("g.node")) {
      const id = el.dataset["id"];
      if (id) this.nodeEls.set(id, el);
    }
    for (const el of this.canvas.querySelectorAll<SVGPathElement>("path.edge")) {
      const key = el.dataset["key"];
      if (key) this.edgeEls.set(key, el);
    }
    this.cullables = [];
    for (const [id, el] of this.nodeEls) {
      const b = layout.nodes.get(id);
      if (b) this.cullables.push({ el, x: b.x, y: b.y, w: b.w, h: b.h, on: false });
    }
    for (const el of this.canvas.querySelectorAll<SVGTextElement>("text.elabel")) {
      const x = Number(el.getAttribute("x"));
      const y = Number(el.getAttribute("y"));
      this.cullables.push({ el, x: x - 30, y: y - 10, w: 60, h: 14, on: false });
    }
    this.shown = { key: vis.key, layout, visible: vis };
    const renderMs = performance.now() - t0;
    this.status.textContent = `${fmtCount(vis.nodes.length)} nodes · ${fmtCount(vis.edges.length)} edges · ${fmtCount(layout.components)} islands · layout ${Math.round(layout.ms)} ms · render ${Math.round(renderMs)} ms`;
    this.canvas.dataset["nodes"] = String(vis.nodes.length);
    this.canvas.dataset["edges"] = String(vis.edges.length);
    this.canvas.dataset["layoutMs"] = String(Math.round(layout.ms));
    this.canvas.dataset["workerMs"] = String(Math.round(layout.workerMs));
    this.canvas.dataset["renderMs"] = String(Math.round(renderMs));
    if (vis.nodes.length === 0) this.setOverlay("No nodes match the filters.", false);
    else this.setOverlay(null, false);
    if (this.fitOnRender) {
      this.fitOnRender = false;
      this.fit();
    } else this.applyTransform();
    this.applySearch(true);
    this.applySelection(!this.fitOnRender);
  }

  /** Waiting on something for a second or more: drawn with a red outline. */
  private isStuck(id: string): boolean {
    const g = this.app.graph;
    if (!g) return false;
    return g.outOf(id, "needs").some((e) => (typeof e.attrs["waited_ns"] === "number" ? (e.attrs["waited_ns"] as number) : 0) >= 1e9);
  }

  // ---- selection / highlight / search ----------------------------------------

  private applySelection(center: boolean): void {
    if (!this.svg) return;
    const app = this.app;
    for (const el of this.canvas.querySelectorAll(".sel, .hl, .nb, .chain")) el.classList.remove("sel", "hl", "nb", "chain");
    for (const id of app.highlight) this.nodeEls.get(id)?.classList.add("hl");
    const sel = app.selected;
    if (sel) {
      const el = this.nodeEls.get(sel);
      el?.classList.add("sel");
      const g = app.graph;
      if (g) {
        for (const e of [...g.outOf(sel), ...g.inOf(sel)]) {
          this.edgeEls.get(e.key)?.classList.add("hl");
          this.nodeEls.get(e.src === sel ? e.dst : e.src)?.classList.add("nb");
        }
        // The whole wait-for chain downstream of the selection stands out.
        const chain = waitChain(g, sel);
        for (const key of chain.edges) this.edgeEls.get(key)?.classList.add("hl", "chain");
        for (const id of chain.nodes) if (id !== sel) this.nodeEls.get(id)?.classList.add("nb", "chain");
      }
      // Dimming everything else restyles every node; on big graphs that costs
      // more than it helps, so only small graphs dim (see .dim-others).
      this.svg.classList.toggle("has-sel", !!el);
      if (center && this.pendingCenter === sel && el) this.centerOn(sel);
    } else this.svg.classList.remove("has-sel");
    this.pendingCenter = null;
  }

  private applySearch(keepIndex: boolean): void {
    const q = this.search.value.trim().toLowerCase();
    if (!this.svg) return;
    for (const el of this.canvas.querySelectorAll(".match")) el.classList.remove("match");
    this.svg.classList.toggle("searching", q.length > 0);
    if (!q || !this.shown) {
      this.matches = [];
      this.searchCount.textContent = "";
      return;
    }
    this.matches = this.shown.visible.nodes
      .filter((n) => n.label.toLowerCase().includes(q) || n.id.toLowerCase().includes(q))
      .map((n) => n.id);
    for (const id of this.matches) this.nodeEls.get(id)?.classList.add("match");
    if (!keepIndex) this.matchIdx = -1;
    const hidden = this.app.graph
      ? [...this.app.graph.nodes.values()].filter((n) => n.label.toLowerCase().includes(q)).length - this.matches.length
      : 0;
    this.searchCount.textContent = `${this.matches.length} match${this.matches.length === 1 ? "" : "es"}${hidden > 0 ? ` (+${hidden} hidden)` : ""}`;
  }

  private nextMatch(dir: number): void {
    if (!this.matches.length) {
      // Only folded into groups (or filtered): select the first; a grouped
      // node then comes out of its group.
      const q = this.search.value.trim().toLowerCase();
      const hidden = [...this.groups.values()].flat().find((id) => {
        const n = this.app.graph?.nodes.get(id);
        return n && (n.label.toLowerCase().includes(q) || n.id.toLowerCase().includes(q));
      });
      if (q && hidden) {
        this.pendingCenter = hidden;
        this.app.select(hidden);
      }
      return;
    }
    this.matchIdx = (this.matchIdx + dir + this.matches.length) % this.matches.length;
    const id = this.matches[this.matchIdx];
    if (!id) return;
    this.searchCount.textContent = `${this.matchIdx + 1} / ${this.matches.length}`;
    this.pendingCenter = id;
    this.app.select(id);
  }

  // ---- focus ------------------------------------------------------------------

  private renderFocusControls(): void {
    const f = this.app.focus;
    this.focusBtn.textContent = f ? `focus on (${f.roots.length})` : "focus off";
    this.focusBtn.classList.toggle("on", !!f);
    this.focusBtn.title = f
      ? `Showing ${f.roots.join(", ")} and neighbours within ${f.depth} hops. Click to show everything.`
      : "Focus on the selected node and its neighbourhood (double-click a node)";
    if (f) this.depthInput.value = String(f.depth);
  }

  private toggleFocus(): void {
    const app = this.app;
    if (app.focus) app.setFocus(null);
    else if (app.selected) {
      const roots = app.highlight.length ? app.highlight : [app.selected];
      app.setFocus({ roots, depth: Math.max(1, Number(this.depthInput.value) || 2) });
    }
  }

  // ---- filters sidebar --------------------------------------------------------

  private renderSide(): void {
    const g = this.app.graph;
    if (!g) {
      replace(this.side);
      return;
    }
    const f = this.filters;
    const section = (title: string, items: HTMLElement[], hidden: Set<string>, all: string[]) =>
      h(
        "div",
        { class: "filter-sec" },
        h(
          "div",
          { class: "filter-head" },
          title,
          h("span", { class: "spacer" }),
          h("a", { href: "#", class: "small", onclick: (ev: MouseEvent) => { ev.preventDefault(); hidden.clear(); this.filtersChanged(); } }, "all"),
          h("a", { href: "#", class: "small", onclick: (ev: MouseEvent) => { ev.preventDefault(); for (const k of all) hidden.add(k); this.filtersChanged(); } }, "none"),
        ),
        items,
      );
    const check = (hidden: Set<string>, key: string, label: HTMLElement | string, count: number, testId: string) => {
      const box = h("input", { type: "checkbox", checked: !hidden.has(key), attrs: { "data-testid": testId } });
      box.addEventListener("change", () => {
        if (box.checked) hidden.delete(key);
        else hidden.add(key);
        this.filtersChanged();
      });
      return h("label", { class: "filter-item" }, box, label, h("span", { class: "count" }, fmtCount(count)));
    };
    const procKeys = [...g.procCounts.keys()].sort();
    const kinds = [...g.kindCounts.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k);
    const edgeKinds = [...new Set([...EDGE_KINDS, ...g.edgeKindCounts.keys()])];
    replace(
      this.side,
      section(
        "Processes",
        procKeys.map((p) => check(f.hiddenProcs, p, h("span", { class: "ellipsis", title: p }, p), g.procCounts.get(p) ?? 0, `filter-proc-${p}`)),
        f.hiddenProcs,
        procKeys,
      ),
      section(
        "Node kinds",
        kinds.map((k) => {
          const st = kindStyle(k);
          return check(f.hiddenKinds, k, h("span", null, h("span", { class: "glyph", style: `--kc:${st.color}` }, st.glyph), k), g.kindCounts.get(k) ?? 0, `filter-kind-${k}`);
        }),
        f.hiddenKinds,
        kinds,
      ),
      section(
        "Edge kinds",
        edgeKinds.map((k) => {
          const s = edgeStyle(k);
          const sample = document.createElementNS(SVG_NS, "svg");
          sample.setAttribute("width", "28");
          sample.setAttribute("height", "8");
          sample.setAttribute("class", "edge-sample");
          sample.innerHTML = `<line x1="1" y1="4" x2="27" y2="4" stroke="${s.color}" stroke-width="${Math.min(s.width, 2.6)}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`;
          return check(f.hiddenEdgeKinds, k, h("span", { title: s.description }, sample as unknown as HTMLElement, k), g.edgeKindCounts.get(k) ?? 0, `filter-edge-${k}`);
        }),
        f.hiddenEdgeKinds,
        edgeKinds,
      ),
      h(
        "div",
        { class: "filter-sec legend muted small" },
        h("div", null, "Double-click a node to focus on it."),
        h("div", null, "Wheel zooms, drag pans; f fits, / searches."),
        h("div", null, "Dashed outline: ghost (other side not in this snapshot)."),
      ),
    );
  }

  private filtersChanged(): void {
    this.fitOnRender = true;
    this.renderSide();
    if (this.active) this.refresh();
  }

  // ---- pan / zoom --------------------------------------------------------------

  private installPanZoom(): void {
    let drag: { x: number; y: number; tx: number; ty: number; moved: boolean } | null = null;
    this.canvas.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const r = this.canvas.getBoundingClientRect();
        const factor = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
        this.zoomAt(ev.clientX - r.left, ev.clientY - r.top, factor, true);
      },
      { passive: false },
    );
    this.canvas.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, tx: this.tx, ty: this.ty, moved: false };
    });
    window.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x;
      const dy = ev.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) this.canvas.classList.add("panning");
      drag.moved = true;
      this.tx = drag.tx + dx;
      this.ty = drag.ty + dy;
      this.previewTransform();
    });
    window.addEventListener("pointerup", (ev) => {
      if (!drag) return;
      const wasDrag = drag.moved;
      drag = null;
      this.canvas.classList.remove("panning");
      if (wasDrag) {
        this.applyTransform();
        return;
      }
      const target = (ev.target as Element | null)?.closest?.("g.node") as SVGGElement | null;
      if (target && this.canvas.contains(target)) {
        const id = target.dataset["id"];
        // A group: take its first member out and inspect it.
        const member = id ? this.groups.get(id)?.[0] : undefined;
        if (member) {
          this.pendingCenter = member;
          this.app.select(member);
        } else if (id) this.app.select(id);
      }
    });
    this.canvas.addEventListener("dblclick", (ev) => {
      const target = (ev.target as Element | null)?.closest?.("g.node") as SVGGElement | null;
      const id = target?.dataset["id"];
      if (id) {
        ev.preventDefault();
        this.app.setFocus({ roots: [id], depth: Math.max(1, Number(this.depthInput.value) || 2) });
        this.app.select(id);
      }
    });
  }

  /**
   * During a wheel or drag gesture, move the already painted SVG as one
   * composited layer (a CSS transform) instead of repainting thousands of
   * shapes per frame; repaint crisp once the gesture settles.
   */
  private previewTransform(): void {
    if (!this.svg) return;
    const c = this.committed;
    const s = this.k / c.k;
    const dx = this.tx - c.tx * s;
    const dy = this.ty - c.ty * s;
    this.svg.style.transform = `translate(${dx.toFixed(1)}px,${dy.toFixed(1)}px) scale(${s.toFixed(4)})`;
    if (this.commitTimer !== null) window.clearTimeout(this.commitTimer);
    this.commitTimer = window.setTimeout(() => {
      this.commitTimer = null;
      this.applyTransform();
    }, 140);
  }

  /**
   * Text is laid out only for what is on screen (plus a margin): SVG text is
   * re-laid out whenever the zoom changes, and doing that for thousands of
   * labels nobody can see made every zoom step and click cost most of a second.
   */
  private cull(): void {
    const { width, height } = this.canvasSize();
    const k = this.k;
    const showText = k >= LOD_LOW;
    const mx = width / k / 2;
    const my = height / k / 2;
    const x0 = -this.tx / k - mx;
    const y0 = -this.ty / k - my;
    const x1 = (width - this.tx) / k + mx;
    const y1 = (height - this.ty) / k + my;
    for (const c of this.cullables) {
      const on = showText && c.x + c.w >= x0 && c.x <= x1 && c.y + c.h >= y0 && c.y <= y1;
      if (on !== c.on) {
        c.on = on;
        c.el.classList.toggle("off", !on);
      }
    }
  }

  private applyTransform(): void {
    if (this.commitTimer !== null) {
      window.clearTimeout(this.commitTimer);
      this.commitTimer = null;
    }
    if (!this.viewport || !this.svg) return;
    this.viewport.setAttribute("transform", `translate(${this.tx.toFixed(1)},${this.ty.toFixed(1)}) scale(${this.k.toFixed(4)})`);
    this.svg.style.transform = "";
    this.committed = { k: this.k, tx: this.tx, ty: this.ty };
    this.svg.classList.toggle("lod-mid", this.k < LOD_MID);
    this.svg.classList.toggle("lod-low", this.k < LOD_LOW);
    this.cull();
  }

  private zoomAt(x: number, y: number, factor: number, gesture = false): void {
    const k = Math.max(0.02, Math.min(4, this.k * factor));
    const f = k / this.k;
    this.tx = x - (x - this.tx) * f;
    this.ty = y - (y - this.ty) * f;
    this.k = k;
    if (gesture) this.previewTransform();
    else this.applyTransform();
  }

  private zoomBy(factor: number): void {
    const r = this.canvasSize();
    this.zoomAt(r.width / 2, r.height / 2, factor);
  }

  fit(): void {
    if (!this.shown) return;
    const { width, height } = this.shown.layout;
    const r = this.canvasSize();
    if (!r.width || !r.height || !width || !height) return;
    const pad = 24;
    const k = Math.max(0.02, Math.min(1.2, (r.width - 2 * pad) / width, (r.height - 2 * pad) / height));
    this.k = k;
    this.tx = (r.width - width * k) / 2;
    this.ty = Math.max(pad, (r.height - height * k) / 2);
    this.applyTransform();
  }

  private canvasSize(): { width: number; height: number } {
    if (!this.size.width || !this.size.height) {
      const r = this.canvas.getBoundingClientRect();
      this.size = { width: r.width, height: r.height };
    }
    return this.size;
  }

  /** Bring a node into view; leaves the view alone when it is already visible. */
  private centerOn(id: string): void {
    const b = this.shown?.layout.nodes.get(id);
    if (!b) return;
    const r = this.canvasSize();
    const sx = b.x * this.k + this.tx;
    const sy = b.y * this.k + this.ty;
    const visible = sx >= 0 && sy >= 0 && sx + b.w * this.k <= r.width && sy + b.h * this.k <= r.height;
    if (visible && this.k >= 0.45) return;
    if (this.k < 0.6) this.k = 0.9;
    this.tx = r.width / 2 - (b.x + b.w / 2) * this.k;
    this.ty = r.height / 2 - (b.y + b.h / 2) * this.k;
    this.applyTransform();
  }
}

/** The point halfway along a polyline. */
function midpoint(pts: Point[]): Point {
  let total = 0;
  for (let i = 1; i < pts.length; i++) total += Math.hypot((pts[i] as Point).x - (pts[i - 1] as Point).x, (pts[i] as Point).y - (pts[i - 1] as Point).y);
  let left = total / 2;
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1] as Point;
    const b = pts[i] as Point;
    const d = Math.hypot(b.x - a.x, b.y - a.y);
    if (d >= left && d > 0) return { x: a.x + ((b.x - a.x) * left) / d, y: a.y + ((b.y - a.y) * left) / d };
    left -= d;
  }
  return pts[0] as Point;
}

function fmtPt(p: Point): string {
  return `${p.x.toFixed(1)},${p.y.toFixed(1)}`;
}

/** A smooth path through the layout's points (a straight hop becomes an S-curve). */
function edgePath(pts: Point[]): string {
  const a = pts[0] as Point;
  const b = pts[pts.length - 1] as Point;
  if (pts.length === 2) {
    const dx = Math.max(30, Math.abs(b.x - a.x) / 2);
    return `M${fmtPt(a)}C${fmtPt({ x: a.x + dx, y: a.y })} ${fmtPt({ x: b.x - dx, y: b.y })} ${fmtPt(b)}`;
  }
  let d = `M${fmtPt(a)}`;
  for (let i = 1; i < pts.length - 1; i++) {
    const p = pts[i] as Point;
    const q = pts[i + 1] as Point;
    const mid = i < pts.length - 2 ? { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 } : q;
    d += `Q${fmtPt(p)} ${fmtPt(mid)}`;
  }
  return d;
}

/**
 * Fold look-alike leaves into one node: nodes of one kind and process with at
 * most three edges, all to the same other nodes (2,000 tasks waiting on one
 * lock become "2,000 × task").  A fan-in that size is one fact, and laying it
 * out node by node would take the layout minutes and the reader a scroll bar.
 */
function aggregate(
  nodes: GNode[],
  edges: GEdge[],
  keep: Set<string>,
): { nodes: GNode[]; edges: GEdge[]; groups: Map<string, string[]> } {
  const incident = new Map<string, GEdge[]>();
  for (const e of edges) {
    (incident.get(e.src) ?? incident.set(e.src, []).get(e.src))?.push(e);
    if (e.dst !== e.src) (incident.get(e.dst) ?? incident.set(e.dst, []).get(e.dst))?.push(e);
  }
  const bySig = new Map<string, string[]>();
  for (const n of nodes) {
    const inc = incident.get(n.id) ?? [];
    if (keep.has(n.id) || inc.length === 0 || inc.length > 3) continue;
    const parts = inc.map((e) => (e.src === n.id ? `>${e.kind}>${e.dst}` : `<${e.kind}<${e.src}`)).sort();
    const sig = `${n.kind}|${n.proc_key}|${n.ghost}|${parts.join("|")}`;
    (bySig.get(sig) ?? bySig.set(sig, []).get(sig))?.push(n.id);
  }
  const rep = new Map<string, string>();
  const groups = new Map<string, string[]>();
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const aggNodes: GNode[] = [];
  for (const members of bySig.values()) {
    if (members.length < AGGREGATE_MIN) continue;
    const first = byId.get(members[0] as string) as GNode;
    const id = `group-of:${first.id}`;
    groups.set(id, members);
    for (const m of members) rep.set(m, id);
    aggNodes.push({
      ...first,
      id,
      label: `${members.length.toLocaleString("en-US")} × ${first.kind}`,
      attrs: { ...first.attrs, meta: {} },
      synthetic: true,
    });
  }
  if (groups.size === 0) return { nodes, edges, groups };
  const outNodes = nodes.filter((n) => !rep.has(n.id)).concat(aggNodes);
  const outEdges: GEdge[] = [];
  const seen = new Set<string>();
  for (const e of edges) {
    const src = rep.get(e.src) ?? e.src;
    const dst = rep.get(e.dst) ?? e.dst;
    if (src === e.src && dst === e.dst) {
      outEdges.push(e);
      continue;
    }
    const key = `${src}|${e.kind}|${dst}|grouped`;
    if (seen.has(key)) continue;
    seen.add(key);
    outEdges.push({ ...e, src, dst, key });
  }
  return { nodes: outNodes, edges: outEdges, groups };
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
