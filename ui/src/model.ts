// An indexed, read-only view of one snapshot's graph (GET /api/snapshots/{id}/graph).

import type { ApiEdge, ApiNode, Attrs, GraphAnswer, SnapshotProcess, SnapshotRecord } from "./types";

export interface GEdge extends ApiEdge {
  /** Stable within the snapshot: `src|kind|dst|n`. */
  key: string;
}

export interface GNode extends ApiNode {
  ghost: boolean;
  /** True when the UI made the node up for an edge endpoint the server did not list. */
  synthetic: boolean;
}

export class GraphIndex {
  readonly nodes = new Map<string, GNode>();
  readonly edges: GEdge[] = [];
  readonly out = new Map<string, GEdge[]>();
  readonly in = new Map<string, GEdge[]>();
  readonly kindCounts = new Map<string, number>();
  readonly edgeKindCounts = new Map<string, number>();
  readonly procCounts = new Map<string, number>();
  readonly snapshot: SnapshotRecord;
  readonly processes: SnapshotProcess[];

  constructor(answer: GraphAnswer) {
    this.snapshot = answer.snapshot;
    this.processes = answer.processes;
    for (const n of answer.nodes) {
      const attrs: Attrs = n.attrs && typeof n.attrs === "object" ? n.attrs : {};
      this.nodes.set(n.id, { ...n, attrs, ghost: attrs["ghost"] === true, synthetic: false });
    }
    const seen = new Map<string, number>();
    for (const e of answer.edges) {
      for (const end of [e.src, e.dst]) {
        if (!this.nodes.has(end)) {
          // A missing side is shown as a ghost, never dropped (DESIGN.md "Server").
          const kind = end.split(":")[0] || "unknown";
          this.nodes.set(end, {
            id: end,
            kind,
            label: end,
            proc_key: e.proc_key,
            attrs: { ghost: true },
            ghost: true,
            synthetic: true,
          });
        }
      }
      const base = `${e.src}|${e.kind}|${e.dst}`;
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      const edge: GEdge = { ...e, attrs: e.attrs ?? {}, key: `${base}|${n}` };
      this.edges.push(edge);
      push(this.out, e.src, edge);
      push(this.in, e.dst, edge);
      this.edgeKindCounts.set(e.kind, (this.edgeKindCounts.get(e.kind) ?? 0) + 1);
    }
    for (const n of this.nodes.values()) {
      this.kindCounts.set(n.kind, (this.kindCounts.get(n.kind) ?? 0) + 1);
      this.procCounts.set(n.proc_key, (this.procCounts.get(n.proc_key) ?? 0) + 1);
    }
  }

  outOf(id: string, kind?: string): GEdge[] {
    const list = this.out.get(id) ?? [];
    return kind ? list.filter((e) => e.kind === kind) : list;
  }

  inOf(id: string, kind?: string): GEdge[] {
    const list = this.in.get(id) ?? [];
    return kind ? list.filter((e) => e.kind === kind) : list;
  }

  get capturedAtNs(): number {
    return this.snapshot.captured_at_ns ?? this.snapshot.requested_at_ns;
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

export function meta(node: { attrs: Attrs }): Attrs {
  const m = node.attrs["meta"];
  return m && typeof m === "object" ? (m as Attrs) : {};
}

/** `path:line` where the entity was created, if the library recorded it. */
export function location(node: { attrs: Attrs }): string | null {
  const loc = meta(node)["ctx.location"];
  return typeof loc === "string" && loc ? loc : null;
}

export function stack(node: { attrs: Attrs }): string[] {
  const s = node.attrs["stack"];
  return Array.isArray(s) ? s.filter((f): f is string => typeof f === "string") : [];
}

export function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

export function str(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

/** Frames in peeps itself or the standard library: not where the user's code is. */
export function isLibraryFrame(frame: string): boolean {
  if (/[/\\]peeps[/\\]_[^/\\]*\.py:/.test(frame)) return true;
  if (frame.startsWith("<frozen ")) return true;
  return /[/\\]lib[/\\]python3\.\d+[/\\]/.test(frame) && !/(site|dist)-packages/.test(frame);
}

/** Frames of installed third-party packages (aiohttp, …). */
export function isPackageFrame(frame: string): boolean {
  return /[/\\](site|dist)-packages[/\\]/.test(frame);
}

/**
 * Where a waiting entity is stuck in the user's code: the innermost stack
 * frame outside peeps, the standard library and installed packages; else the
 * innermost outside peeps and the standard library; else the innermost frame;
 * else the creation site.
 */
export function userFrame(node: { attrs: Attrs }): string | null {
  const frames = stack(node);
  for (const accept of [
    (f: string) => !isLibraryFrame(f) && !isPackageFrame(f),
    (f: string) => !isLibraryFrame(f),
  ]) {
    for (let i = frames.length - 1; i >= 0; i--) {
      const f = frames[i];
      if (f && accept(f)) return f;
    }
  }
  return frames[frames.length - 1] ?? location(node);
}

/**
 * The wait-for chain from a node: what it needs, transitively, crossing a
 * held resource to its holder ("A needs lock L, L is held by B, B needs …").
 * Returns the nodes and edge keys on it (bounded, cycles stop it).
 */
export function waitChain(g: GraphIndex, id: string, limit = 200): { nodes: Set<string>; edges: Set<string> } {
  const nodes = new Set<string>([id]);
  const edges = new Set<string>();
  const queue = [id];
  while (queue.length && nodes.size < limit) {
    const cur = queue.shift() as string;
    const next: [string, string][] = [];
    for (const e of g.outOf(cur, "needs")) next.push([e.dst, e.key]);
    for (const e of g.inOf(cur, "holds")) next.push([e.src, e.key]);
    for (const [n, key] of next) {
      edges.add(key);
      if (!nodes.has(n)) {
        nodes.add(n);
        queue.push(n);
      }
    }
  }
  return { nodes, edges };
}

/** One path along the wait-for chain (first edge at each step); `cycle` when it loops back. */
export function waitPath(g: GraphIndex, id: string, maxHops = 12): { path: { id: string; via: string }[]; cycle: boolean } {
  const path: { id: string; via: string }[] = [];
  const seen = new Set([id]);
  let cur = id;
  for (let i = 0; i < maxHops; i++) {
    const need = g.outOf(cur, "needs")[0];
    const holder = need ? undefined : g.inOf(cur, "holds")[0];
    const next = need ? need.dst : holder?.src;
    if (!next) return { path, cycle: false };
    const via = need ? String(need.attrs["op"] ?? "needs") : "held by";
    if (seen.has(next)) {
      path.push({ id: next, via });
      return { path, cycle: true };
    }
    seen.add(next);
    path.push({ id: next, via });
    cur = next;
  }
  return { path, cycle: false };
}
