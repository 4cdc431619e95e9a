// Layout worker: layered layout with @dagrejs/dagre, one connected component
// at a time, then the components packed into rows.
//
// Why per component: a snapshot's graph is mostly many small wait-for
// islands (a few tasks around a channel or a lock); laying each out on its
// own keeps the cost near-linear in the number of nodes (dagre spends about
// 1 ms of CPU per node here, so 2,000 nodes take 1–2 s, off the main thread)
// and puts the largest islands first.  For large graphs the components are those
// of the wait-for graph (needs / holds / closed_by): a `spawned` star from
// `main` would otherwise glue everything into one enormous layer; spawned and
// touches edges then merge islands only up to a size cap.  Edges that join
// two components are drawn as plain curves between them.

import dagre from "@dagrejs/dagre";
import type { LayoutEdgeIn, LayoutNodeIn, LayoutRequest, LayoutResponse } from "./layout-protocol";

const PRIMARY = new Set(["needs", "holds", "closed_by"]);
/** Above this many nodes, components come from the wait-for edges only. */
const BIG_GRAPH = 300;
const GAP = 48;
/** Largest island that spawned/touches edges may build in a big graph. */
const ISLAND_CAP = 64;
const RANK_SEP = 60;
const NODE_SEP = 14;

interface Component {
  nodes: LayoutNodeIn[];
  edges: LayoutEdgeIn[];
}

interface Placed {
  width: number;
  height: number;
  nodes: Map<string, { x: number; y: number; w: number; h: number }>;
  edges: Map<string, number[]>;
}

function components(nodes: LayoutNodeIn[], edges: LayoutEdgeIn[]): { comps: Component[]; free: LayoutEdgeIn[] } {
  const big = nodes.length > BIG_GRAPH;
  const parent = new Map<string, string>();
  for (const n of nodes) parent.set(n.id, n.id);
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r) as string;
    let c = x;
    while (c !== r) {
      const next = parent.get(c) as string;
      parent.set(c, r);
      c = next;
    }
    return r;
  };
  const size = new Map<string, number>();
  for (const n of nodes) size.set(n.id, 1);
  const union = (x: string, y: string, cap: number): void => {
    const a = find(x);
    const b = find(y);
    if (a === b) return;
    const sa = size.get(a) ?? 1;
    const sb = size.get(b) ?? 1;
    if (sa + sb > cap) return;
    parent.set(a, b);
    size.set(b, sa + sb);
  };
  const present = (e: LayoutEdgeIn) => parent.has(e.src) && parent.has(e.dst);
  if (!big) {
    for (const e of edges) if (present(e)) union(e.src, e.dst, Infinity);
  } else {
    for (const e of edges) if (present(e) && PRIMARY.has(e.kind)) union(e.src, e.dst, Infinity);
    // Then spawned/touches edges, but only while islands stay small, and
    // edges at hubs (main spawning everything) last: a worker group joins the
    // island of the tasks it spawned instead of everything joining main.
    const degree = new Map<string, number>();
    for (const e of edges) {
      degree.set(e.src, (degree.get(e.src) ?? 0) + 1);
      degree.set(e.dst, (degree.get(e.dst) ?? 0) + 1);
    }
    const hub = (e: LayoutEdgeIn) => Math.max(degree.get(e.src) ?? 0, degree.get(e.dst) ?? 0);
    const secondary = edges.filter((e) => present(e) && !PRIMARY.has(e.kind));
    secondary.sort((a, b) => hub(a) - hub(b));
    for (const e of secondary) union(e.src, e.dst, ISLAND_CAP);
  }
  const byRoot = new Map<string, Component>();
  for (const n of nodes) {
    const r = find(n.id);
    let c = byRoot.get(r);
    if (!c) {
      c = { nodes: [], edges: [] };
      byRoot.set(r, c);
    }
    c.nodes.push(n);
  }
  const free: LayoutEdgeIn[] = [];
  for (const e of edges) {
    if (!parent.has(e.src) || !parent.has(e.dst)) continue;
    const a = find(e.src);
    if (a === find(e.dst)) byRoot.get(a)?.edges.push(e);
    else free.push(e);
  }
  return { comps: [...byRoot.values()], free };
}

function layoutComponent(c: Component): Placed {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: NODE_SEP, ranksep: RANK_SEP, edgesep: 8, marginx: 0, marginy: 0 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of c.nodes) g.setNode(n.id, { width: n.width, height: n.height });
  for (const e of c.edges) {
    if (e.src === e.dst) continue;
    // holds edges run resource → holder so "A needs L, B holds L" reads A → L → B.
    const [s, t] = e.reversed ? [e.dst, e.src] : [e.src, e.dst];
    g.setEdge(s, t, { weight: PRIMARY.has(e.kind) ? 4 : 1, minlen: 1 }, e.id);
  }
  dagre.layout(g);
  const nodes = new Map<string, { x: number; y: number; w: number; h: number }>();
  let maxX = 0;
  let maxY = 0;
  for (const n of c.nodes) {
    const p = g.node(n.id) as { x: number; y: number; width: number; height: number };
    const x = p.x - n.width / 2;
    const y = p.y - n.height / 2;
    nodes.set(n.id, { x, y, w: n.width, h: n.height });
    maxX = Math.max(maxX, x + n.width);
    maxY = Math.max(maxY, y + n.height);
  }
  const edges = new Map<string, number[]>();
  for (const e of c.edges) {
    if (e.src === e.dst) {
      const b = nodes.get(e.src);
      if (b) edges.set(e.id, selfLoop(b));
      continue;
    }
    const [s, t] = e.reversed ? [e.dst, e.src] : [e.src, e.dst];
    const ed = g.edge({ v: s, w: t, name: e.id }) as { points?: { x: number; y: number }[] } | undefined;
    const pts = ed?.points ?? [];
    const flat: number[] = [];
    const ordered = e.reversed ? pts.slice().reverse() : pts;
    for (const p of ordered) flat.push(p.x, p.y);
    edges.set(e.id, flat);
  }
  return { width: maxX, height: maxY, nodes, edges };
}

function selfLoop(b: { x: number; y: number; w: number; h: number }): number[] {
  const x = b.x + b.w;
  const y = b.y + b.h / 2;
  return [x, y - 6, x + 22, y - 16, x + 22, y + 16, x, y + 6];
}

/** Singletons (no edges inside their component) in a compact grid. */
function gridBlock(singles: LayoutNodeIn[], width: number): Placed {
  const nodes = new Map<string, { x: number; y: number; w: number; h: number }>();
  const cellW = Math.max(...singles.map((n) => n.width)) + NODE_SEP * 2;
  const cellH = Math.max(...singles.map((n) => n.height)) + NODE_SEP;
  const cols = Math.max(1, Math.floor((width + NODE_SEP * 2) / cellW));
  singles.forEach((n, i) => {
    nodes.set(n.id, { x: (i % cols) * cellW, y: Math.floor(i / cols) * cellH, w: n.width, h: n.height });
  });
  const rows = Math.ceil(singles.length / cols);
  return { width: Math.min(singles.length, cols) * cellW - NODE_SEP * 2, height: rows * cellH - NODE_SEP, nodes, edges: new Map() };
}

/**
 * Islands laid out before, by their exact content (node ids and sizes, edge
 * ids and ends).  Live refresh brings a new snapshot every few seconds in
 * which most islands have not changed; they are not laid out again.
 */
const cache = new Map<string, Placed>();
const CACHE_LIMIT = 4000;

function componentKey(c: Component): string {
  const n = c.nodes.map((x) => `${x.id}/${x.width}/${x.height}`).sort();
  const e = c.edges.map((x) => `${x.id}/${x.src}/${x.dst}/${x.kind}`).sort();
  return `${n.join("|")}#${e.join("|")}`;
}

function layoutCached(c: Component): Placed {
  const key = componentKey(c);
  const hit = cache.get(key);
  if (hit) return hit;
  const placed = layoutComponent(c);
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, placed);
  return placed;
}

interface Packing {
  outNodes: [string, number, number, number, number][];
  outEdges: [string, number[], boolean][];
  width: number;
  height: number;
  score: number;
}

/** Shelf packing: left to right, wrapping to a new row at the target width. */
function pack(placed: Placed[], target: number): Packing {
  const outNodes: [string, number, number, number, number][] = [];
  const outEdges: [string, number[], boolean][] = [];
  let x = 0;
  let y = 0;
  let rowH = 0;
  let width = 0;
  for (const p of placed) {
    if (x > 0 && x + p.width > target) {
      x = 0;
      y += rowH + GAP;
      rowH = 0;
    }
    for (const [id, b] of p.nodes) outNodes.push([id, b.x + x, b.y + y, b.w, b.h]);
    for (const [id, pts] of p.edges) outEdges.push([id, pts.map((v, i) => v + (i % 2 === 0 ? x : y)), false]);
    width = Math.max(width, x + p.width);
    rowH = Math.max(rowH, p.height);
    x += p.width + GAP;
  }
  return { outNodes, outEdges, width, height: y + rowH, score: 0 };
}

function layout(req: LayoutRequest): LayoutResponse {
  const started = performance.now();
  const { comps, free } = components(req.nodes, req.edges);
  const multi = comps.filter((c) => c.nodes.length > 1 || c.edges.length > 0);
  const singles = comps.filter((c) => c.nodes.length === 1 && c.edges.length === 0).map((c) => c.nodes[0] as LayoutNodeIn);
  // Largest islands first: that is where long chains and pile-ups are.
  multi.sort((a, b) => b.nodes.length - a.nodes.length || b.edges.length - a.edges.length);
  const total = multi.reduce((s, c) => s + c.nodes.length, 0);
  let done = 0;
  let lastReport = performance.now();
  const placed = multi.map((c) => {
    const p = layoutCached(c);
    done += c.nodes.length;
    const now = performance.now();
    if (now - lastReport > 150) {
      lastReport = now;
      ctx.postMessage({ seq: req.seq, progress: done / total } as LayoutResponse);
    }
    return p;
  });
  const aspect = req.aspect || 1.8;
  const area = placed.reduce((sum, p) => sum + (p.width + GAP) * (p.height + GAP), 0) + singles.length * 260 * 52;
  const widest = placed.reduce((m, p) => Math.max(m, p.width), 0);
  const base = Math.max(widest, Math.sqrt(area * aspect), 900);
  // Shelf packing wastes height when islands differ, so try a few row widths
  // and keep the one whose overall shape is closest to the canvas's.
  let best: Packing | null = null;
  for (const f of [1, 1.25, 1.5, 2, 2.5, 3, 4, 6]) {
    const target = Math.max(widest, base * f);
    const blocks = singles.length ? [...placed, gridBlock(singles, target)] : placed;
    const p = pack(blocks, target);
    const score = Math.abs(Math.log((p.width || 1) / (p.height || 1) / aspect));
    if (!best || score < best.score) best = { ...p, score };
  }
  const { outNodes, outEdges, width, height } = best as Packing;
  // Edges between components: a straight hop from the source's right side to
  // the target's left side (the renderer curves it).
  const pos = new Map(outNodes.map((n) => [n[0], n]));
  for (const e of free) {
    const a = pos.get(e.src);
    const b = pos.get(e.dst);
    if (!a || !b) continue;
    outEdges.push([e.id, [a[1] + a[3], a[2] + a[4] / 2, b[1], b[2] + b[4] / 2], true]);
  }
  return {
    seq: req.seq,
    nodes: outNodes,
    edges: outEdges,
    width,
    height,
    ms: performance.now() - started,
    components: placed.length,
  };
}

const ctx = self as unknown as {
  onmessage: ((ev: MessageEvent<LayoutRequest>) => void) | null;
  postMessage: (msg: LayoutResponse) => void;
};

ctx.onmessage = (ev) => {
  try {
    ctx.postMessage(layout(ev.data));
  } catch (err) {
    ctx.postMessage({ seq: ev.data.seq, error: String(err instanceof Error ? err.stack ?? err.message : err) } as LayoutResponse);
  }
};
