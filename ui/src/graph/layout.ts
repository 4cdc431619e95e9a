// Layered layout with ELK (elkjs), run in ELK's own Web Worker so a
// 2,000-node layout never freezes the page.  Edges point left to right:
// a `needs` chain reads A → B → C across the screen.  `holds` edges are laid
// out reversed (resource before holder) so "A needs lock L, L is held by B"
// reads A → L → B; they are still drawn with the arrow at the resource.

import ELK from "elkjs/lib/elk-api.js";
import type { ELK as ElkApi, ElkExtendedEdge, ElkNode, ElkPoint } from "elkjs/lib/elk-api";
import elkWorkerUrl from "elkjs/lib/elk-worker.min.js?url";

export interface LayoutNodeIn {
  id: string;
  width: number;
  height: number;
}

export interface LayoutEdgeIn {
  id: string;
  src: string;
  dst: string;
  /** Lay out dst → src (see module docstring). */
  reversed: boolean;
}

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface LayoutResult {
  nodes: Map<string, Box>;
  /** Polyline from the edge's src to its dst, in graph coordinates. */
  edges: Map<string, ElkPoint[]>;
  width: number;
  height: number;
  ms: number;
}

let elk: ElkApi | null = null;

function engine(): ElkApi {
  if (!elk) elk = new ELK({ workerUrl: elkWorkerUrl });
  return elk;
}

/** Abandon a running layout (the worker is killed; the next call starts a new one). */
export function cancelLayout(): void {
  if (elk) {
    elk.terminateWorker();
    elk = null;
  }
}

export async function layoutGraph(nodes: LayoutNodeIn[], edges: LayoutEdgeIn[]): Promise<LayoutResult> {
  const started = performance.now();
  if (nodes.length === 0) {
    return { nodes: new Map(), edges: new Map(), width: 0, height: 0, ms: 0 };
  }
  const big = nodes.length > 600;
  const elkEdges: ElkExtendedEdge[] = edges.map((e) => ({
    id: e.id,
    sources: [e.reversed ? e.dst : e.src],
    targets: [e.reversed ? e.src : e.dst],
  }));
  const graph: ElkNode = {
    id: "__root__",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.edgeRouting": big ? "POLYLINE" : "ORTHOGONAL",
      "elk.layered.spacing.nodeNodeBetweenLayers": "56",
      "elk.spacing.nodeNode": "14",
      "elk.spacing.edgeNode": "10",
      "elk.spacing.componentComponent": "36",
      "elk.layered.thoroughness": big ? "2" : "7",
      "elk.separateConnectedComponents": "true",
      "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
      "elk.layered.cycleBreaking.strategy": "GREEDY_MODEL_ORDER",
    },
    children: nodes.map((n) => ({ id: n.id, width: n.width, height: n.height })),
    edges: elkEdges,
  };
  const out = await engine().layout(graph);
  const boxes = new Map<string, Box>();
  for (const c of out.children ?? []) {
    boxes.set(c.id, { x: c.x ?? 0, y: c.y ?? 0, w: c.width ?? 0, h: c.height ?? 0 });
  }
  const reversed = new Set(edges.filter((e) => e.reversed).map((e) => e.id));
  const paths = new Map<string, ElkPoint[]>();
  for (const e of (out.edges ?? []) as ElkExtendedEdge[]) {
    const pts: ElkPoint[] = [];
    for (const s of e.sections ?? []) {
      if (pts.length === 0) pts.push(s.startPoint);
      for (const b of s.bendPoints ?? []) pts.push(b);
      pts.push(s.endPoint);
    }
    if (reversed.has(e.id)) pts.reverse();
    paths.set(e.id, pts);
  }
  return {
    nodes: boxes,
    edges: paths,
    width: out.width ?? 0,
    height: out.height ?? 0,
    ms: performance.now() - started,
  };
}
