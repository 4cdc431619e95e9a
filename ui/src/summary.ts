// One-line summaries of a node, used in graph boxes, chips and lists.

import { fmtDuration } from "./format";
import { num, str } from "./model";
import type { Attrs } from "./types";

/** "16 / 16" for a channel (capacity null = unbounded, shown as ∞). */
export function depthText(attrs: Attrs): string | null {
  const depth = num(attrs["depth"]);
  if (depth === null) return null;
  const cap = attrs["capacity"];
  return `${depth} / ${typeof cap === "number" ? cap : "∞"}`;
}

export function isFull(attrs: Attrs): boolean {
  const depth = num(attrs["depth"]);
  const cap = num(attrs["capacity"]);
  return depth !== null && cap !== null && cap > 0 && depth >= cap;
}

export function subtitle(kind: string, attrs: Attrs): string {
  const parts: string[] = [];
  switch (kind) {
    case "channel":
    case "oneshot":
    case "watch": {
      const d = depthText(attrs);
      if (d) parts.push(d);
      if (attrs["closed"] === true) parts.push("closed");
      const bs = num(attrs["blocked_senders"]);
      if (bs) parts.push(`${bs} blocked send`);
      const br = num(attrs["blocked_receivers"]);
      if (br) parts.push(`${br} blocked recv`);
      break;
    }
    case "task":
    case "future": {
      const st = str(attrs["state"]);
      if (st) parts.push(st);
      const outcome = str(attrs["outcome"]);
      if (outcome) parts.push(outcome);
      break;
    }
    case "semaphore": {
      const avail = num(attrs["permits_available"]) ?? num(attrs["available"]);
      const permits = num(attrs["permits_total"]) ?? num(attrs["permits"]);
      if (avail !== null && permits !== null) parts.push(`${avail} / ${permits} free`);
      else if (avail !== null) parts.push(`${avail} free`);
      const w = num(attrs["waiters"]);
      if (w) parts.push(`${w} waiting`);
      break;
    }
    case "event": {
      if (typeof attrs["is_set"] === "boolean") parts.push(attrs["is_set"] ? "set" : "not set");
      const w = num(attrs["waiters"]);
      if (w) parts.push(`${w} waiting`);
      break;
    }
    case "request":
    case "response": {
      const m = str(attrs["method"]);
      const t = str(attrs["target"]);
      if (m || t) parts.push([m, t].filter(Boolean).join(" "));
      const st = str(attrs["state"]);
      if (st) parts.push(st);
      const status = attrs["status"];
      if (status !== null && status !== undefined) parts.push(String(status));
      break;
    }
    case "lock":
    case "rwlock":
    case "thread_lock": {
      const locked = attrs["locked"] ?? attrs["write_locked"];
      if (typeof locked === "boolean") parts.push(locked ? "held" : "free");
      const readers = num(attrs["readers"]);
      if (readers) parts.push(`${readers} readers`);
      const w = num(attrs["waiters"]);
      if (w) parts.push(`${w} waiting`);
      break;
    }
    case "sleep": {
      const rem = num(attrs["remaining_ns"]);
      const dur = num(attrs["duration_ns"]);
      if (dur !== null) parts.push(fmtDuration(dur));
      if (rem !== null) parts.push(`${fmtDuration(rem)} left`);
      break;
    }
    case "peep": {
      const w = num(attrs["waited_ns"]);
      if (w !== null) parts.push(`waited ${fmtDuration(w)}`);
      break;
    }
    case "thread": {
      const v = str(attrs["verdict"]);
      if (v) parts.push(v);
      break;
    }
    default: {
      const st = str(attrs["state"]) ?? str(attrs["status"]) ?? str(attrs["method"]);
      if (st) parts.push(st);
    }
  }
  if (attrs["ghost"] === true) parts.push("ghost");
  if (parts.length === 0) {
    const age = num(attrs["age_ns"]);
    if (age !== null) parts.push(`age ${fmtDuration(age)}`);
  }
  return parts.join(" · ");
}
