// Formatting of times, durations, counts and attribute values.

const NS_PER_MS = 1_000_000;

/** Current wall clock in integer-ish nanoseconds (ms precision). */
export function nowNs(): number {
  return Date.now() * NS_PER_MS;
}

/** `12.3s`, `2m 05s`, `1h 02m`, `850ms`, `41µs`. */
export function fmtDuration(ns: number | null | undefined): string {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return "—";
  const neg = ns < 0;
  const v = Math.abs(ns);
  let out: string;
  if (v < 1_000) out = `${Math.round(v)}ns`;
  else if (v < 1_000_000) out = `${(v / 1_000).toFixed(v < 10_000 ? 1 : 0)}µs`;
  else if (v < 1_000_000_000) out = `${(v / 1_000_000).toFixed(v < 10_000_000 ? 1 : 0)}ms`;
  else {
    const s = v / 1e9;
    if (s < 60) out = `${s.toFixed(s < 10 ? 2 : 1)}s`;
    else if (s < 3600) out = `${Math.floor(s / 60)}m ${pad2(Math.floor(s % 60))}s`;
    else if (s < 86400) out = `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
    else out = `${Math.floor(s / 86400)}d ${pad2(Math.floor((s % 86400) / 3600))}h`;
  }
  return neg ? `-${out}` : out;
}

/** Coarser duration for ticking displays (no sub-second jitter past 10 s). */
export function fmtTicking(ns: number): string {
  if (ns >= 10e9 && ns < 60e9) return `${Math.floor(ns / 1e9)}s`;
  return fmtDuration(ns);
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** Wall-clock time of day with milliseconds, local time zone. */
export function fmtClock(ns: number | null | undefined): string {
  if (!ns) return "—";
  const d = new Date(ns / NS_PER_MS);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

export function fmtDateTime(ns: number | null | undefined): string {
  if (!ns) return "—";
  const d = new Date(ns / NS_PER_MS);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(ns)}`;
}

export function fmtAge(ns: number | null | undefined): string {
  if (!ns) return "—";
  const age = nowNs() - ns;
  if (age < 1e9) return "just now";
  return `${fmtTicking(age).replace(/\.\d+s$/, "s")} ago`;
}

export function fmtCount(n: unknown): string {
  return typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? "—");
}

/** Format one attribute value using its key's unit suffix. */
export function fmtAttr(key: string, value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    if (key.endsWith("_at_ns") || key === "since_ns") return fmtDateTime(value);
    if (key.endsWith("_ns")) return fmtDuration(value);
    if (key.endsWith("_ms")) return fmtDuration(value * NS_PER_MS);
    if (key.endsWith("share")) return `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
    // Identifiers read as they are: no thousands separators in a pid.
    if (/(^|_)(id|pid|ident|port|returncode|version)$/.test(key)) return String(value);
    return fmtCount(value);
  }
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return value ? "yes" : "no";
  return JSON.stringify(value);
}

/** Split `path:line in func` into its parts; tolerate plain `path:line`. */
export function parseFrame(frame: string): { where: string; func: string | null } {
  const m = /^(.*?:\d+)(?:\s+in\s+(.+))?$/.exec(frame.trim());
  if (m && m[1]) return { where: m[1], func: m[2] ?? null };
  return { where: frame, func: null };
}
