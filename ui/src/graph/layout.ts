// Main-thread side of the layout: runs the dagre layout in a Web Worker
// (layout.worker.ts) so a 2,000-node graph never freezes the page, and lets a
// newer request abandon an older one.

import type { LayoutEdgeIn, LayoutNodeIn, LayoutResponse } from "./layout-protocol";

export type { LayoutEdgeIn, LayoutNodeIn } from "./layout-protocol";

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Point {
  x: number;
  y: number;
}

export interface LayoutResult {
  nodes: Map<string, Box>;
  /** Polyline from the edge's src to its dst, in graph coordinates. */
  edges: Map<string, Point[]>;
  /** Edges between islands (drawn as plain curves). */
  between: Set<string>;
  width: number;
  height: number;
  /** Time inside the worker, and end to end as seen by the page. */
  workerMs: number;
  ms: number;
  components: number;
}

let worker: Worker | null = null;
let seq = 0;
let pending: {
  seq: number;
  resolve: (r: LayoutResponse) => void;
  reject: (e: Error) => void;
  onProgress?: ((share: number) => void) | undefined;
} | null = null;

function getWorker(): Worker {
  if (!worker) {
    worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module", name: "peeps-layout" });
    worker.onmessage = (ev: MessageEvent<LayoutResponse>) => {
      const p = pending;
      if (!p || ev.data.seq !== p.seq) return;
      if (ev.data.progress !== undefined) {
        p.onProgress?.(ev.data.progress);
        return;
      }
      pending = null;
      if (ev.data.error) p.reject(new Error(ev.data.error));
      else p.resolve(ev.data);
    };
    worker.onerror = (ev) => {
      const p = pending;
      pending = null;
      worker?.terminate();
      worker = null;
      p?.reject(new Error(ev.message || "layout worker failed"));
    };
  }
  return worker;
}

/** Abandon a running layout: the worker is killed and the promise rejected. */
export function cancelLayout(): void {
  if (pending) {
    const p = pending;
    pending = null;
    worker?.terminate();
    worker = null;
    p.reject(new Error("cancelled"));
  }
}

export function layoutGraph(
  nodes: LayoutNodeIn[],
  edges: LayoutEdgeIn[],
  aspect: number,
  onProgress?: (share: number) => void,
): Promise<LayoutResult> {
  cancelLayout();
  const started = performance.now();
  const my = ++seq;
  return new Promise<LayoutResponse>((resolve, reject) => {
    pending = { seq: my, resolve, reject, onProgress };
    getWorker().postMessage({ seq: my, nodes, edges, aspect });
  }).then((r) => {
    const boxes = new Map<string, Box>();
    for (const [id, x, y, w, h] of r.nodes) boxes.set(id, { x, y, w, h });
    const paths = new Map<string, Point[]>();
    const between = new Set<string>();
    for (const [id, flat, free] of r.edges) {
      if (free) between.add(id);
      const pts: Point[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) pts.push({ x: flat[i] as number, y: flat[i + 1] as number });
      paths.set(id, pts);
    }
    return {
      nodes: boxes,
      edges: paths,
      between,
      width: r.width,
      height: r.height,
      workerMs: r.ms,
      ms: performance.now() - started,
      components: r.components,
    };
  });
}
