// TypeScript mirror of src/peeps/types/_model.py and of the HTTP API answers in
// docs/architecture.md ("HTTP API").  Keep in step with both.

/** Attribute bags are JSON objects; values are inspected at runtime. */
export type Attrs = Record<string, unknown>;

export const EDGE_KINDS = ["needs", "holds", "touches", "spawned", "closed_by"] as const;
export type EdgeKind = (typeof EDGE_KINDS)[number];

export const NODE_KINDS = [
  "task",
  "future",
  "channel",
  "oneshot",
  "watch",
  "lock",
  "rwlock",
  "semaphore",
  "event",
  "notify",
  "condition",
  "once_cell",
  "sleep",
  "timeout",
  "interval",
  "peep",
  "thread",
  "thread_lock",
  "subprocess",
  "file_op",
  "net_op",
  "connection",
  "request",
  "response",
  "shm_segment",
  "group",
  "provider_error",
  "event_loop",
  "loop",
  "thread_call",
  "lockdep",
] as const;
/** Providers may add kinds of their own, so any string is accepted. */
export type NodeKind = (typeof NODE_KINDS)[number] | (string & {});

/** One entity.  `id` is `{kind}:{pid}:{n}`, unique for the entity's life. */
export interface Node {
  id: string;
  kind: NodeKind;
  label: string;
  /** Kind-specific attributes; `attrs.meta["ctx.location"]` is the creation site. */
  attrs: Attrs;
}

export interface Edge {
  src: string;
  dst: string;
  kind: EdgeKind | (string & {});
  attrs: Attrs;
}

/** A runtime event; `name` is `<domain>.<subject>.<action>[.<outcome>]`. */
export interface Event {
  id: number;
  ts_ns: number;
  proc_key: string;
  entity_id: string;
  name: string;
  parent_entity_id: string | null;
  attrs: Attrs;
}

/** The graph of one process at one moment (wire shape). */
export interface GraphSnapshot {
  process_name: string;
  proc_key: string;
  pid: number;
  captured_at_ns: number;
  nodes: Node[];
  edges: Edge[];
  events: Event[];
}

// ---- HTTP API ------------------------------------------------------------

export type SnapshotStatus = "in_progress" | "complete" | "partial" | "incomplete";
/** `pending` while the snapshot is in flight; `error`: the reply was not a graph. */
export type ProcessStatus =
  | "pending"
  | "responded"
  | "timeout"
  | "disconnected"
  | "error"
  | "incomplete"
  | (string & {});

export interface SnapshotRecord {
  snapshot_id: number;
  requested_at_ns: number;
  captured_at_ns: number | null;
  completed_at_ns: number | null;
  status: SnapshotStatus | (string & {});
  trigger: string;
  requested: number;
  responded: number;
  timed_out: number;
  disconnected: number;
  errored?: number;
}

export interface SnapshotProcess {
  snapshot_id?: number;
  proc_key: string;
  process_name: string;
  pid: number;
  status: ProcessStatus;
  error: string | null;
  responded_at_ns: number | null;
  /** The process's own capture time (the snapshot's is when processes were asked). */
  captured_at_ns?: number | null;
  node_count: number;
  edge_count: number;
  event_count: number;
}

export interface ConnectedProcess {
  proc_key: string;
  process_name: string;
  pid: number;
  peer: string;
  connected_at_ns: number;
}

export interface HealthAnswer {
  status: "ok";
  version: string;
  connected_processes: number;
}

export interface ProcessesAnswer {
  processes: ConnectedProcess[];
}

export interface JumpNowAnswer {
  snapshot_id: number;
  captured_at_ns: number;
  status?: SnapshotStatus | (string & {});
  errored?: number;
  requested: number;
  responded: number;
  timed_out: number;
  disconnected: number;
}

export interface SnapshotProgressAnswer {
  in_flight: {
    snapshot_id: number;
    requested: number;
    responded: number;
    pending: string[];
    started_at_ns: number;
  } | null;
  last_snapshot_id: number | null;
}

export interface SnapshotsAnswer {
  snapshots: SnapshotRecord[];
}

export interface SnapshotAnswer {
  snapshot: SnapshotRecord;
  processes: SnapshotProcess[];
}

/** Nodes and edges as the server returns them: tagged with their process. */
export interface ApiNode extends Node {
  proc_key: string;
}

export interface ApiEdge extends Edge {
  proc_key: string;
}

export interface GraphAnswer {
  snapshot: SnapshotRecord;
  processes: SnapshotProcess[];
  nodes: ApiNode[];
  edges: ApiEdge[];
}

export interface EventsAnswer {
  events: Event[];
}

export type Severity = "critical" | "high" | "warning" | "medium" | "low" | "info" | (string & {});

export interface Suspect {
  kind: string;
  severity: Severity;
  score: number;
  title: string;
  reason: string;
  duration_ns: number | null;
  node_ids: string[];
  proc_key: string | null;
}

export interface SuspectsAnswer {
  suspects: Suspect[];
}

export interface SqlRequest {
  snapshot_id: number;
  sql: string;
  params: unknown[];
}

export interface SqlAnswer {
  columns: string[];
  rows: unknown[][];
  row_count: number;
  truncated: boolean;
}

export interface ApiErrorBody {
  error: { status: number; message: string };
}
