// How each node kind and edge kind looks.  One table so the graph, the
// inspector and the legend agree.

export type Shape = "round" | "rect" | "pipe" | "pill" | "tag" | "hex";

export interface KindStyle {
  color: string;
  glyph: string;
  shape: Shape;
  group: string;
}

const ACTOR = "#38bdf8";
const THREAD = "#a78bfa";
const QUEUE = "#34d399";
const LOCK = "#fbbf24";
const SIGNAL = "#f472b6";
const TIME = "#94a3b8";
const RPC = "#2dd4bf";
const IO = "#fb923c";

const STYLES: Record<string, KindStyle> = {
  task: { color: ACTOR, glyph: "T", shape: "round", group: "actors" },
  future: { color: ACTOR, glyph: "F", shape: "round", group: "actors" },
  group: { color: ACTOR, glyph: "G", shape: "round", group: "actors" },
  peep: { color: "#c084fc", glyph: "P", shape: "pill", group: "actors" },
  thread: { color: THREAD, glyph: "Th", shape: "hex", group: "actors" },
  subprocess: { color: IO, glyph: "SP", shape: "hex", group: "io" },
  channel: { color: QUEUE, glyph: "Ch", shape: "pipe", group: "queues" },
  oneshot: { color: QUEUE, glyph: "1", shape: "pipe", group: "queues" },
  watch: { color: QUEUE, glyph: "W", shape: "pipe", group: "queues" },
  lock: { color: LOCK, glyph: "L", shape: "rect", group: "sync" },
  rwlock: { color: LOCK, glyph: "RW", shape: "rect", group: "sync" },
  thread_lock: { color: LOCK, glyph: "TL", shape: "rect", group: "sync" },
  semaphore: { color: LOCK, glyph: "S", shape: "rect", group: "sync" },
  event: { color: SIGNAL, glyph: "E", shape: "rect", group: "sync" },
  notify: { color: SIGNAL, glyph: "N", shape: "rect", group: "sync" },
  condition: { color: SIGNAL, glyph: "C", shape: "rect", group: "sync" },
  once_cell: { color: SIGNAL, glyph: "O", shape: "rect", group: "sync" },
  sleep: { color: TIME, glyph: "z", shape: "pill", group: "time" },
  timeout: { color: TIME, glyph: "TO", shape: "pill", group: "time" },
  interval: { color: TIME, glyph: "I", shape: "pill", group: "time" },
  request: { color: RPC, glyph: "Rq", shape: "tag", group: "rpc" },
  response: { color: RPC, glyph: "Rs", shape: "tag", group: "rpc" },
  connection: { color: IO, glyph: "Cn", shape: "rect", group: "io" },
  file_op: { color: IO, glyph: "Fs", shape: "rect", group: "io" },
  net_op: { color: IO, glyph: "Nt", shape: "rect", group: "io" },
  shm_segment: { color: IO, glyph: "Sh", shape: "rect", group: "io" },
  provider_error: { color: "#f87171", glyph: "!", shape: "rect", group: "other" },
  event_loop: { color: THREAD, glyph: "EL", shape: "hex", group: "actors" },
  loop: { color: THREAD, glyph: "EL", shape: "hex", group: "actors" },
  thread_call: { color: ACTOR, glyph: "TC", shape: "round", group: "actors" },
  lockdep: { color: "#f87171", glyph: "LD", shape: "tag", group: "other" },
};

const FALLBACK: KindStyle = { color: "#9ca3af", glyph: "?", shape: "rect", group: "other" };

export function kindStyle(kind: string): KindStyle {
  return STYLES[kind] ?? { ...FALLBACK, glyph: kind.slice(0, 2) || "?" };
}

export interface EdgeStyle {
  color: string;
  width: number;
  dash: string | null;
  label: string;
  description: string;
}

export const EDGE_STYLES: Record<string, EdgeStyle> = {
  needs: {
    color: "#ef4444",
    width: 2.6,
    dash: null,
    label: "needs",
    description: "src cannot progress until dst changes",
  },
  holds: { color: "#3b82f6", width: 2, dash: null, label: "holds", description: "src holds dst" },
  spawned: {
    color: "#7b8494",
    width: 1.3,
    dash: "6 4",
    label: "spawned",
    description: "src created dst",
  },
  touches: {
    color: "#64748b",
    width: 1.2,
    dash: "1.5 3.5",
    label: "touches",
    description: "src interacted with dst",
  },
  closed_by: {
    color: "#f59e0b",
    width: 1.8,
    dash: null,
    label: "closed_by",
    description: "src ended because dst ended",
  },
};

export function edgeStyle(kind: string): EdgeStyle {
  return (
    EDGE_STYLES[kind] ?? { color: "#9ca3af", width: 1.2, dash: null, label: kind, description: kind }
  );
}

/** SVG path for a node outline of the given shape, box at (0,0)-(w,h). */
export function shapePath(shape: Shape, w: number, h: number): string {
  switch (shape) {
    case "pill": {
      const r = h / 2;
      return `M${r},0H${w - r}A${r},${r} 0 0 1 ${w - r},${h}H${r}A${r},${r} 0 0 1 ${r},0Z`;
    }
    case "pipe": {
      const k = 9;
      return `M${k},0H${w - k}L${w},${h / 2}L${w - k},${h}H${k}L0,${h / 2}Z`;
    }
    case "hex": {
      const k = 6;
      return `M${k},0H${w - k}L${w},${k}V${h - k}L${w - k},${h}H${k}L0,${h - k}V${k}Z`;
    }
    case "tag": {
      const k = 10;
      return `M0,0H${w - k}L${w},${k}V${h}H0Z`;
    }
    case "rect":
      return `M2,0H${w - 2}Q${w},0 ${w},2V${h - 2}Q${w},${h} ${w - 2},${h}H2Q0,${h} 0,${h - 2}V2Q0,0 2,0Z`;
    case "round":
    default: {
      const r = 8;
      return `M${r},0H${w - r}Q${w},0 ${w},${r}V${h - r}Q${w},${h} ${w - r},${h}H${r}Q0,${h} 0,${h - r}V${r}Q0,0 ${r},0Z`;
    }
  }
}
