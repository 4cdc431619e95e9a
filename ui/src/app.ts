// Application state, deep links and data loading.  Views subscribe to
// change notifications and re-render what they show.
//
// Deep link grammar (URL hash):
//   #/snapshot/{id}[/node/{node id}][?view=graph&focus=2&live=1]
//   #/?view=sql                       (no snapshot: follow the newest, live)

import { ApiError, api } from "./api";
import { GraphIndex } from "./model";
import type { ConnectedProcess, Event, SnapshotProgressAnswer, SnapshotRecord, Suspect } from "./types";

export type ViewName = "suspects" | "graph" | "requests" | "threads" | "processes" | "sql";

export const VIEWS: { name: ViewName; title: string; key: string }[] = [
  { name: "suspects", title: "Suspects", key: "1" },
  { name: "graph", title: "Graph", key: "2" },
  { name: "requests", title: "Requests", key: "3" },
  { name: "threads", title: "Threads", key: "4" },
  { name: "processes", title: "Processes", key: "5" },
  { name: "sql", title: "SQL", key: "6" },
];

export interface Route {
  snapshotId: number | null;
  nodeId: string | null;
  view: ViewName;
  live: boolean;
  focusDepth: number | null;
}

const VIEW_NAMES = new Set<string>(VIEWS.map((v) => v.name));

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const [path = "", query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean);
  const route: Route = { snapshotId: null, nodeId: null, view: "suspects", live: false, focusDepth: null };
  for (let i = 0; i < parts.length; i += 2) {
    const key = parts[i];
    const value = parts[i + 1];
    if (value === undefined) break;
    if (key === "snapshot") {
      const id = Number(value);
      if (Number.isInteger(id) && id > 0) route.snapshotId = id;
    } else if (key === "node") {
      route.nodeId = decodeURIComponent(value);
    }
  }
  const q = new URLSearchParams(query);
  const view = q.get("view");
  if (view && VIEW_NAMES.has(view)) route.view = view as ViewName;
  else if (route.nodeId) route.view = "graph";
  const focus = Number(q.get("focus"));
  if (Number.isInteger(focus) && focus > 0) route.focusDepth = Math.min(focus, 9);
  route.live = route.snapshotId === null || q.get("live") === "1";
  return route;
}

function encodeNodeId(id: string): string {
  return encodeURIComponent(id).replace(/%3A/gi, ":");
}

export function formatHash(r: Route): string {
  let path = "#/";
  if (r.snapshotId !== null) path += `snapshot/${r.snapshotId}`;
  if (r.nodeId !== null && r.snapshotId !== null) path += `/node/${encodeNodeId(r.nodeId)}`;
  const q = new URLSearchParams();
  const defaultView = r.nodeId ? "graph" : "suspects";
  if (r.view !== defaultView) q.set("view", r.view);
  if (r.focusDepth !== null && r.nodeId) q.set("focus", String(r.focusDepth));
  if (r.live && r.snapshotId !== null) q.set("live", "1");
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

export type Change = "snapshots" | "data" | "selection" | "view" | "live" | "focus" | "connected" | "status";

export type Listener = (changes: Set<Change>) => void;

export interface FocusState {
  roots: string[];
  depth: number;
}

export class App {
  snapshots: SnapshotRecord[] = [];
  snapshotId: number | null = null;
  live = true;
  view: ViewName = "suspects";
  selected: string | null = null;
  /** Nodes singled out together (a suspect's node_ids); drawn highlighted. */
  highlight: string[] = [];
  focus: FocusState | null = null;
  graph: GraphIndex | null = null;
  suspects: Suspect[] | null = null;
  loading = false;
  error: string | null = null;
  connected: ConnectedProcess[] = [];
  /** A snapshot being taken right now (GET /api/snapshot-progress), if any. */
  inFlight: SnapshotProgressAnswer["in_flight"] = null;
  serverVersion = "";
  jumping = false;
  /** Set when a snapshot named by a deep link is not on the server. */
  notice: string | null = null;

  private listeners: Listener[] = [];
  private pending = new Set<Change>();
  private flushScheduled = false;
  private loadSeq = 0;
  private pollTimer: number | null = null;
  private eventsCache = new Map<string, Promise<Event[]>>();

  subscribe(fn: Listener): void {
    this.listeners.push(fn);
  }

  emit(...changes: Change[]): void {
    for (const c of changes) this.pending.add(c);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      const batch = this.pending;
      this.pending = new Set();
      for (const fn of this.listeners) fn(batch);
      this.writeHash();
    });
  }

  // ---- routing ------------------------------------------------------------

  route(): Route {
    return {
      snapshotId: this.snapshotId,
      nodeId: this.selected,
      view: this.view,
      live: this.live,
      focusDepth: this.focus && this.selected && this.focus.roots.includes(this.selected) ? this.focus.depth : null,
    };
  }

  /**
   * The URL hash the app last wrote or followed. The browser changes the URL
   * at once on a link or `location.hash = ...` but fires `hashchange` a task
   * later; while the two differ, a navigation is on its way and the app's
   * route is stale, so writing it would undo the link.
   */
  private knownHash = location.hash;

  /** Called on `hashchange`: the URL's route is the one to follow now. */
  followHash(): void {
    this.knownHash = location.hash;
  }

  private writeHash(): void {
    if (location.hash !== this.knownHash) return;
    const hash = formatHash(this.route());
    if (hash !== location.hash && !(hash === "#/" && location.hash === "")) {
      history.replaceState(null, "", hash);
      this.knownHash = location.hash;
    }
  }

  async applyRoute(r: Route): Promise<void> {
    this.view = r.view;
    this.live = r.live;
    this.selected = r.nodeId;
    this.highlight = r.nodeId ? [r.nodeId] : [];
    this.focus = r.nodeId && r.focusDepth ? { roots: [r.nodeId], depth: r.focusDepth } : null;
    // Named now, loaded below: the hash written meanwhile keeps the link's snapshot.
    if (r.snapshotId !== null) this.snapshotId = r.snapshotId;
    this.emit("view", "live", "selection", "focus");
    await this.refreshSnapshots();
    const target = r.snapshotId ?? this.newestComplete()?.snapshot_id ?? null;
    await this.loadSnapshot(target);
  }

  // ---- snapshots ----------------------------------------------------------

  newestComplete(): SnapshotRecord | undefined {
    return this.snapshots.find((s) => s.status !== "in_progress");
  }

  currentRecord(): SnapshotRecord | undefined {
    return this.snapshots.find((s) => s.snapshot_id === this.snapshotId) ?? this.graph?.snapshot;
  }

  async refreshSnapshots(): Promise<void> {
    try {
      const [snaps, procs, progress] = await Promise.all([
        api.snapshots(200),
        api.processes(),
        api.progress().catch(() => null),
      ]);
      this.snapshots = snaps.snapshots;
      this.connected = procs.processes;
      this.inFlight = progress?.in_flight ?? null;
      this.emit("snapshots", "connected");
      if (this.error && this.error.startsWith("server unreachable")) {
        this.error = null;
        this.emit("status");
      }
    } catch (err) {
      this.error = errorText(err);
      this.emit("status");
    }
  }

  async loadSnapshot(id: number | null): Promise<void> {
    const seq = ++this.loadSeq;
    if (id === null) {
      this.snapshotId = null;
      this.graph = null;
      this.suspects = null;
      this.emit("data");
      return;
    }
    this.snapshotId = id;
    this.loading = true;
    this.notice = null;
    this.emit("status", "snapshots");
    try {
      const [graph, suspects] = await Promise.all([api.graph(id), api.suspects(id)]);
      if (seq !== this.loadSeq) return;
      this.graph = new GraphIndex(graph);
      this.suspects = suspects.suspects;
      this.error = null;
      this.eventsCache.clear();
      // Ids are stable for an entity's life, so the selection survives a
      // move to a newer snapshot as long as the entity still exists.
      if (this.selected && !this.graph.nodes.has(this.selected)) {
        this.notice = `${this.selected} is not in snapshot #${id}`;
      }
      this.highlight = this.highlight.filter((n) => this.graph?.nodes.has(n));
      if (this.focus) {
        const roots = this.focus.roots.filter((n) => this.graph?.nodes.has(n));
        this.focus = roots.length ? { ...this.focus, roots } : null;
      }
    } catch (err) {
      if (seq !== this.loadSeq) return;
      this.graph = null;
      this.suspects = null;
      this.error = err instanceof ApiError && err.status === 404 ? `snapshot #${id} not found on the server` : errorText(err);
    } finally {
      if (seq === this.loadSeq) {
        this.loading = false;
        this.emit("data", "status", "selection", "focus");
      }
    }
  }

  setSnapshot(id: number, opts: { live?: boolean } = {}): void {
    if (opts.live !== undefined && opts.live !== this.live) {
      this.live = opts.live;
      this.emit("live");
    }
    if (id !== this.snapshotId) void this.loadSnapshot(id);
  }

  /** Move along the timeline: -1 older, +1 newer. */
  step(delta: number): void {
    const usable = this.snapshots.filter((s) => s.status !== "in_progress");
    const idx = usable.findIndex((s) => s.snapshot_id === this.snapshotId);
    // snapshots are newest first, so "older" is a higher index.
    const next = usable[idx < 0 ? 0 : idx - delta];
    if (next) this.setSnapshot(next.snapshot_id, { live: false });
  }

  setLive(on: boolean): void {
    this.live = on;
    this.emit("live");
    if (on) void this.poll();
  }

  async jumpNow(): Promise<void> {
    if (this.jumping) return;
    this.jumping = true;
    this.emit("status");
    try {
      const ans = await api.jumpNow();
      await this.refreshSnapshots();
      await this.loadSnapshot(ans.snapshot_id);
    } catch (err) {
      this.error = `jump now failed: ${errorText(err)}`;
    } finally {
      this.jumping = false;
      this.emit("status");
    }
  }

  startPolling(intervalMs = 2000): void {
    if (this.pollTimer !== null) return;
    this.pollTimer = window.setInterval(() => void this.poll(), intervalMs);
  }

  private polling = false;

  private async poll(): Promise<void> {
    if (this.polling || document.hidden) return;
    this.polling = true;
    try {
      await this.refreshSnapshots();
      if (this.live && !this.loading) {
        const newest = this.newestComplete();
        if (newest && newest.snapshot_id !== this.snapshotId) await this.loadSnapshot(newest.snapshot_id);
      }
    } finally {
      this.polling = false;
    }
  }

  // ---- selection ----------------------------------------------------------

  select(nodeId: string | null, opts: { highlight?: string[] } = {}): void {
    this.selected = nodeId;
    this.highlight = opts.highlight ?? (nodeId ? [nodeId] : []);
    this.notice = null;
    this.emit("selection");
  }

  setView(view: ViewName): void {
    if (view === this.view) return;
    this.view = view;
    this.emit("view");
  }

  /** Open the graph focused on these nodes (a suspect's node_ids, a clicked node). */
  showInGraph(nodeIds: string[], depth = 2): void {
    const roots = nodeIds.filter((n) => this.graph?.nodes.has(n));
    if (roots.length === 0) return;
    this.selected = this.selected && roots.includes(this.selected) ? this.selected : (roots[0] ?? null);
    this.highlight = roots;
    this.focus = { roots, depth };
    this.view = "graph";
    this.emit("selection", "focus", "view");
  }

  setFocus(focus: FocusState | null): void {
    this.focus = focus;
    this.emit("focus");
  }

  events(entityId: string): Promise<Event[]> {
    const id = this.snapshotId;
    if (id === null) return Promise.resolve([]);
    const key = `${id}|${entityId}`;
    let p = this.eventsCache.get(key);
    if (!p) {
      p = api.events(id, entityId).then((a) => a.events);
      p.catch(() => this.eventsCache.delete(key));
      this.eventsCache.set(key, p);
    }
    return p;
  }
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.status ? `${err.status}: ${err.message}` : err.message;
  return err instanceof Error ? err.message : String(err);
}
