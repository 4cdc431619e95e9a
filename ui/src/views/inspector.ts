// Inspector: everything about the selected node — kind-specific state,
// who it waits on and who waits on it (with live durations), where it was
// created, its current stack, its edges and its runtime events.

import { type App, type Change, errorText, formatHash } from "../app";
import { type Child, h, replace } from "../dom";
import { fmtAttr, fmtClock, fmtDuration } from "../format";
import { edgeStyle, kindStyle } from "../kinds";
import { type GEdge, type GNode, type GraphIndex, isLibraryFrame, isPackageFrame, location as creationSite, meta, num, stack, str, userFrame, waitPath } from "../model";
import { depthText, isFull } from "../summary";
import type { Attrs, Event } from "../types";
import { frameEl, kv, nodeChip, tickSpan } from "./widgets";

/** The facts that matter most for each kind, in reading order (docs/architecture.md). */
const KIND_FACTS: Record<string, [string, string][]> = {
  task: [
    ["state", "state"],
    ["coro", "coroutine"],
    ["source", "tracked by"],
    ["outcome", "outcome"],
    ["exception_type", "exception"],
    ["cancelled_by", "cancelled by"],
    ["steps", "steps"],
    ["busy_ns", "busy (all steps)"],
    ["longest_step_ns", "longest step"],
    ["since_resumed_ns", "since last resumed"],
    ["waiting_ns", "waiting"],
  ],
  channel: [
    ["sent", "sent"],
    ["received", "received"],
    ["blocked_senders", "blocked senders"],
    ["blocked_receivers", "blocked receivers"],
    ["blocked_joiners", "blocked joiners"],
    ["unfinished_tasks", "unfinished tasks"],
    ["closed", "closed"],
    ["close_cause", "close cause"],
    ["closed_by", "closed by"],
  ],
  oneshot: [
    ["state", "state"],
    ["sender_alive", "sender alive"],
    ["sender_held_by", "sender held by"],
    ["resolvable", "resolvable"],
    ["receiver_waiting", "receiver waiting"],
    ["close_cause", "close cause"],
    ["sent_by", "sent by"],
  ],
  watch: [
    ["version", "version"],
    ["receivers", "receivers"],
    ["waiting", "waiting"],
    ["closed", "closed"],
    ["last_sent_by", "last sent by"],
  ],
  lock: [
    ["locked", "locked"],
    ["held_ns", "held for"],
    ["waiters", "waiters"],
    ["acquisitions", "acquisitions"],
    ["contentions", "contentions"],
    ["max_wait_ns", "longest wait"],
    ["max_hold_ns", "longest hold"],
  ],
  rwlock: [
    ["readers", "readers"],
    ["writer", "writer"],
    ["write_locked", "write locked"],
    ["waiting_readers", "waiting readers"],
    ["waiting_writers", "waiting writers"],
    ["contentions", "contentions"],
  ],
  thread_lock: [
    ["lock_type", "type"],
    ["lock_class", "lock class"],
    ["locked", "locked"],
    ["held_ns", "held for"],
    ["waiters", "waiters"],
    ["available", "available"],
    ["acquisitions", "acquisitions"],
    ["contentions", "contentions"],
    ["max_wait_ns", "longest wait"],
    ["lockdep_reports", "lock-order reports"],
  ],
  semaphore: [
    ["bounded", "bounded"],
    ["waiters", "waiters"],
    ["acquisitions", "acquisitions"],
    ["contentions", "contentions"],
    ["max_wait_ns", "longest wait"],
  ],
  event: [
    ["is_set", "set"],
    ["waiters", "waiters"],
    ["sets", "sets"],
    ["last_set_by", "last set by"],
    ["last_set_at_ns", "last set at"],
  ],
  notify: [
    ["waiters", "waiters"],
    ["permit_stored", "permit stored"],
    ["last_notified_by", "last notified by"],
  ],
  condition: [
    ["waiters", "waiters"],
    ["lock", "lock"],
    ["locked", "locked"],
    ["last_notified_by", "last notified by"],
  ],
  once_cell: [
    ["initialized", "initialized"],
    ["initializing", "initializing"],
    ["waiters", "waiters"],
    ["init_attempts", "init attempts"],
  ],
  sleep: [
    ["duration_ns", "duration"],
    ["remaining_ns", "remaining"],
    ["deadline_at_ns", "deadline"],
  ],
  timeout: [
    ["delay_ns", "delay"],
    ["remaining_ns", "remaining"],
    ["expired", "expired"],
  ],
  interval: [
    ["period_ns", "period"],
    ["ticks", "ticks"],
    ["missed_ticks", "missed ticks"],
    ["remaining_ns", "next tick in"],
  ],
  peep: [["waited_ns", "waited"]],
  future: [
    ["type", "type"],
    ["children", "children"],
  ],
  group: [
    ["type", "type"],
    ["children", "children"],
  ],
  thread: [
    ["verdict", "verdict"],
    ["verdict_ns", "for"],
    ["cpu_share", "cpu share"],
    ["samples", "samples"],
    ["state", "state"],
    ["daemon", "daemon"],
    ["native_id", "native id"],
    ["target", "target"],
  ],
  subprocess: [
    ["command", "command"],
    ["pid", "pid"],
    ["running", "running"],
    ["running_ns", "running for"],
    ["returncode", "return code"],
    ["spawned_by", "spawned by"],
  ],
  file_op: [
    ["op", "op"],
    ["path", "path"],
    ["running_ns", "running for"],
  ],
  request: [
    ["method", "method"],
    ["target", "target"],
    ["state", "state"],
    ["status", "status"],
    ["elapsed_ns", "elapsed"],
    ["chain_id", "chain"],
    ["span_id", "span"],
    ["expected_peer", "expected peer"],
  ],
  response: [
    ["method", "method"],
    ["state", "state"],
    ["status", "status"],
    ["peer", "peer"],
    ["queue_wait_ns", "queued for"],
    ["elapsed_ns", "elapsed"],
    ["chain_id", "chain"],
    ["span_id", "span"],
    ["expected_peer", "expected peer"],
  ],
  connection: [
    ["role", "role"],
    ["transport", "transport"],
    ["peer", "peer"],
    ["state", "state"],
    ["in_flight", "in flight"],
    ["bytes_in", "bytes in"],
    ["bytes_out", "bytes out"],
    ["idle_ns", "idle"],
  ],
  shm_segment: [
    ["name", "name"],
    ["size", "size"],
    ["role", "role"],
    ["attached_in", "attached in"],
  ],
  event_loop: [
    ["running", "running"],
    ["closed", "closed"],
    ["tasks", "live tasks"],
    ["loop_type", "type"],
  ],
  thread_call: [
    ["function", "function"],
    ["state", "state"],
    ["queued_ns", "queued for"],
    ["running_ns", "running for"],
    ["worker_thread_id", "worker thread"],
  ],
  lockdep: [
    ["title", "report"],
    ["cycle", "lock-order cycle"],
    ["sites", "sites"],
    ["detected_at_ns", "detected at"],
  ],
  provider_error: [
    ["provider", "provider"],
    ["error_kind", "error kind"],
    ["error", "error"],
  ],
};

/** Durations that keep growing after capture while the state lasts. */
const LIVE_DURATIONS = new Set(["held_ns", "waiting_ns", "since_resumed_ns", "running_ns", "idle_ns", "verdict_ns", "elapsed_ns"]);

const WIDTH_KEY = "peeps.inspector.width";

/** Attributes shown in their own sections, left out of the generic table. */
const HANDLED = new Set(["meta", "stack", "dominant_frames", "ghost"]);

export class Inspector {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "insp-body" });
  private shownKey = "";
  private shownNode: string | null = null;
  private scrolled = 0;

  constructor(private readonly app: App) {
    this.el = h("aside", { class: "inspector", attrs: { "data-testid": "inspector" } }, this.body);
    this.el.addEventListener("scroll", () => (this.scrolled = this.el.scrollTop), { passive: true });
    this.installResizer();
    app.subscribe((c) => this.update(c));
  }

  update(changes: Set<Change>): void {
    if (!changes.has("selection") && !changes.has("data")) return;
    const app = this.app;
    const key = `${app.snapshotId}|${app.selected}|${app.graph ? "g" : ""}|${app.notice ?? ""}`;
    if (key === this.shownKey && !changes.has("data")) return;
    this.shownKey = key;
    const g = app.graph;
    const id = app.selected;
    this.el.classList.toggle("open", !!id);
    if (!g || !id) {
      replace(this.body, h("div", { class: "insp-empty" }, "Select a suspect, a node in the graph or a row to inspect it."));
      return;
    }
    const n = g.nodes.get(id);
    if (!n) {
      replace(
        this.body,
        this.closeBtn(),
        h("div", { class: "insp-empty" }, h("div", { class: "mono" }, id), app.notice ?? "This node is not in the current snapshot."),
      );
      return;
    }
    // A newer snapshot of the same node keeps the reader's scroll position.
    // Restored in the next frame: touching scrollTop now would force a layout
    // of the whole page (the graph's class changes included) inside the click.
    const keep = this.shownNode === n.id ? this.scrolled : 0;
    this.shownNode = n.id;
    replace(this.body, this.render(g, n));
    requestAnimationFrame(() => {
      if (this.el.scrollTop !== keep) this.el.scrollTop = keep;
    });
  }

  /** Drag the inspector's left edge to resize it; the width is remembered. */
  private installResizer(): void {
    const handle = h("div", { class: "insp-resizer", title: "Drag to resize" });
    this.el.prepend(handle);
    const saved = Number(localStorage.getItem(WIDTH_KEY));
    if (saved >= 280) this.el.style.setProperty("--insp-w", `${saved}px`);
    handle.addEventListener("pointerdown", (ev) => {
      ev.preventDefault();
      handle.setPointerCapture(ev.pointerId);
      handle.classList.add("dragging");
      const right = this.el.getBoundingClientRect().right;
      const move = (e: PointerEvent) => {
        const w = Math.max(280, Math.min(window.innerWidth * 0.7, right - e.clientX));
        this.el.style.setProperty("--insp-w", `${Math.round(w)}px`);
      };
      const up = () => {
        handle.classList.remove("dragging");
        handle.removeEventListener("pointermove", move);
        handle.removeEventListener("pointerup", up);
        localStorage.setItem(WIDTH_KEY, String(Math.round(this.el.getBoundingClientRect().width)));
      };
      handle.addEventListener("pointermove", move);
      handle.addEventListener("pointerup", up);
    });
  }

  private closeBtn(): HTMLElement {
    return h("button", { class: "btn icon close", title: "Close (Esc)", onclick: () => this.app.select(null) }, "×");
  }

  private render(g: GraphIndex, n: GNode): Child[] {
    const st = kindStyle(n.kind);
    const app = this.app;
    const link = window.location.href.split("#")[0] + formatHash({ ...app.route(), nodeId: n.id });
    const header = h(
      "div",
      { class: "insp-head" },
      this.closeBtn(),
      h(
        "div",
        { class: "insp-title" },
        h("span", { class: "glyph big", style: `--kc:${st.color}` }, st.glyph),
        h("div", null, h("div", { class: "insp-label", attrs: { "data-testid": "inspector-label" } }, n.label), h("div", { class: "insp-sub" }, h("span", { class: "kind" }, n.kind), h("span", { class: "mono" }, n.id), h("span", { class: "muted" }, n.proc_key))),
      ),
      h(
        "div",
        { class: "insp-actions" },
        n.ghost ? h("span", { class: "badge ghost", title: "The other side of this entity is not in the snapshot" }, "ghost") : null,
        h("button", { class: "btn small", onclick: () => app.showInGraph([n.id]) }, "focus in graph"),
        h(
          "button",
          {
            class: "btn small",
            title: "Copy a deep link to this node in this snapshot",
            onclick: (ev: MouseEvent) => {
              void navigator.clipboard?.writeText(link).catch(() => undefined);
              (ev.currentTarget as HTMLElement).textContent = "copied";
            },
          },
          "copy link",
        ),
      ),
    );
    const sections: Child[] = [header];
    sections.push(this.kindSection(g, n));
    sections.push(this.waitsSection(g, n));
    sections.push(this.locationSection(n));
    sections.push(this.edgesSection(g, n));
    sections.push(this.attrsSection(n));
    sections.push(this.eventsSection(g, n));
    return sections;
  }

  // ---- kind-specific summary ----------------------------------------------

  private kindSection(g: GraphIndex, n: GNode): Child {
    const a = n.attrs;
    const rows: [string, Child][] = [];
    let hero: Child = null;
    const notes: Child[] = [];
    if (n.kind === "channel" || n.kind === "oneshot" || n.kind === "watch") {
      const d = depthText(a);
      if (d) {
        const depth = num(a["depth"]) ?? 0;
        const cap = num(a["capacity"]);
        const pct = cap ? Math.min(100, (100 * depth) / cap) : 0;
        hero = h(
          "div",
          { class: `hero${isFull(a) ? " full" : ""}` },
          h("div", { class: "hero-label" }, "depth / capacity"),
          h("div", { class: "hero-value", attrs: { "data-testid": "channel-depth" } }, d),
          cap ? h("div", { class: "bar" }, h("span", { style: `width:${pct}%` })) : null,
          isFull(a) ? h("div", { class: "hero-note" }, "full — senders block until a receiver takes an item") : null,
        );
      }
      if (n.kind === "channel") {
        if (a["blocked_senders"] === undefined)
          rows.push(["blocked senders", String(g.inOf(n.id, "needs").filter((e) => e.attrs["op"] === "send").length)]);
        if (a["blocked_receivers"] === undefined)
          rows.push(["blocked receivers", String(g.inOf(n.id, "needs").filter((e) => e.attrs["op"] === "recv").length)]);
      }
      if (n.kind === "oneshot" && a["resolvable"] === false)
        notes.push(h("div", { class: "hero-note" }, "can never resolve: no live task holds the sender"));
    } else if (n.kind === "semaphore") {
      const avail = num(a["permits_available"]) ?? num(a["available"]);
      const total = num(a["permits_total"]) ?? num(a["permits"]);
      if (avail !== null || total !== null)
        hero = h(
          "div",
          { class: `hero${avail === 0 ? " full" : ""}` },
          h("div", { class: "hero-label" }, "permits available / total"),
          h("div", { class: "hero-value", attrs: { "data-testid": "permits" } }, `${avail ?? "?"} / ${total ?? "?"}`),
          total ? h("div", { class: "bar" }, h("span", { style: `width:${Math.min(100, (100 * (total - (avail ?? 0))) / total)}%` })) : null,
        );
    }
    if (n.kind === "lock" || n.kind === "rwlock" || n.kind === "thread_lock" || n.kind === "semaphore" || n.kind === "once_cell") {
      const holders = g.inOf(n.id, "holds");
      if (holders.length)
        rows.push([
          holders.length > 1 ? "held by" : "holder",
          h(
            "div",
            { class: "chips" },
            holders.map((e) => {
              const held = num(e.attrs["held_ns"]);
              return h("span", { class: "holder" }, nodeChip(this.app, e.src), held !== null ? h("span", { class: "muted small" }, " for ", tickSpan(held, g.capturedAtNs)) : null);
            }),
          ),
        ]);
    }
    // A finished task's durations stop when it finishes (its age is its lifetime): they do not tick.
    const finished = n.kind === "task" && a["finished_at_ns"] !== undefined;
    const tickFrom = finished ? null : g.capturedAtNs;
    for (const [key, label] of KIND_FACTS[n.kind] ?? []) {
      if (!(key in a)) continue;
      rows.push([label, this.factValue(key, a[key], g, tickFrom)]);
    }
    if (n.kind === "thread") {
      const frames = dominantFrames(a);
      if (frames.length)
        rows.push([
          "dominant frames",
          h(
            "div",
            { class: "frames" },
            frames.map((f) =>
              h("div", { class: "dom-frame" }, h("span", { class: "share" }, `${Math.round(f.share * 100)}%`), frameEl(f.frame)),
            ),
          ),
        ]);
    }
    const age = num(a["age_ns"]);
    if (age !== null) rows.push([finished ? "lived" : "age", tickSpan(age, tickFrom)]);
    if (!hero && rows.length === 0 && notes.length === 0) return null;
    return h("section", { class: "insp-sec" }, hero, notes, rows.length ? kv(rows) : null);
  }

  /** A fact: node ids become chips, durations tick when they are live. */
  private factValue(key: string, v: unknown, g: GraphIndex, tickFrom: number | null): Child {
    if (typeof v === "string" && g.nodes.has(v)) return nodeChip(this.app, v);
    if (Array.isArray(v) && v.every((x) => typeof x === "string" && g.nodes.has(x)))
      return h("div", { class: "chips" }, (v as string[]).map((x) => nodeChip(this.app, x)));
    if (key === "state") return h("span", { class: `state st-${String(v)}` }, String(v));
    if (key === "verdict") return h("span", { class: `verdict v-${String(v)}` }, String(v));
    if (typeof v === "number" && LIVE_DURATIONS.has(key)) return tickSpan(v, tickFrom);
    if (key === "exception_type" || key === "error") return h("span", { class: "err" }, String(v));
    return attrValue(key, v);
  }

  // ---- waits ----------------------------------------------------------------

  private waitsSection(g: GraphIndex, n: GNode): Child {
    const cap = g.capturedAtNs;
    const needs = g.outOf(n.id, "needs");
    const waiters = g.inOf(n.id, "needs");
    const holds = g.outOf(n.id, "holds");
    const parts: Child[] = [];
    const chain = waitPath(g, n.id);
    if (chain.path.length >= 2) {
      // The whole chain, so "what is this really waiting for" is one glance.
      parts.push(
        h("h3", null, "Wait chain", chain.cycle ? h("span", { class: "cycle" }, " ↺ cycle") : null),
        h(
          "div",
          { class: "chain wait-chain", attrs: { "data-testid": "wait-chain" } },
          nodeChip(this.app, n.id),
          chain.path.map((step) => [
            h("span", { class: "chain-arrow", title: step.via }, step.via === "held by" ? "⇢" : "→"),
            h("span", { class: "chain-via" }, step.via),
            nodeChip(this.app, step.id),
          ]),
        ),
      );
    }
    if (needs.length) {
      parts.push(
        h("h3", null, "Waiting on"),
        h(
          "div",
          { class: "waits", attrs: { "data-testid": "waiting-on" } },
          needs.map((e) => this.waitRow(e, e.dst, cap, false)),
        ),
      );
    }
    if (waiters.length) {
      parts.push(
        h("h3", null, `Waited on by ${waiters.length}`),
        h(
          "div",
          { class: "waits", attrs: { "data-testid": "waiters" } },
          waiters.map((e) => this.waitRow(e, e.src, cap, true)),
        ),
      );
    }
    if (holds.length) {
      parts.push(
        h("h3", null, "Holds"),
        h(
          "div",
          { class: "waits" },
          holds.map((e) => {
            const held = num(e.attrs["held_ns"]);
            return h(
              "div",
              { class: "wait-row holds" },
              h(
                "div",
                { class: "wait-main" },
                nodeChip(this.app, e.dst, { summary: true }),
                held !== null ? h("span", { class: "wait-dur holds", title: "held since" }, tickSpan(held, cap)) : null,
              ),
            );
          }),
        ),
      );
    }
    return parts.length ? h("section", { class: "insp-sec" }, parts) : null;
  }

  private waitRow(e: GEdge, other: string, capturedAtNs: number, showLocation: boolean): HTMLElement {
    const waited = num(e.attrs["waited_ns"]);
    const op = str(e.attrs["op"]);
    const peer = this.app.graph?.nodes.get(other);
    let where: string | null = null;
    if (showLocation && peer) {
      where = userFrame(peer);
    }
    return h(
      "div",
      { class: "wait-row", attrs: { "data-testid": "wait-row" } },
      h(
        "div",
        { class: "wait-main" },
        op ? h("span", { class: "op" }, op) : null,
        nodeChip(this.app, other, { summary: true }),
        waited !== null ? h("span", { class: "wait-dur", title: "waiting since" }, tickSpan(waited, capturedAtNs)) : null,
      ),
      where ? frameEl(where, "wait-loc") : null,
    );
  }

  // ---- location and stack ---------------------------------------------------

  private locationSection(n: GNode): Child {
    const loc = creationSite(n);
    const frames = stack(n);
    if (!loc && frames.length === 0) return null;
    const stuckAt = userFrame(n);
    return h(
      "section",
      { class: "insp-sec" },
      loc ? [h("h3", null, "Created at"), h("div", { attrs: { "data-testid": "created-at" } }, frameEl(loc))] : null,
      frames.length
        ? [
            h("h3", null, "Current stack ", h("span", { class: "muted" }, "(innermost last)")),
            h(
              "div",
              { class: "stack", attrs: { "data-testid": "stack" } },
              frames.map((f) => frameEl(f, f === stuckAt ? "innermost" : isLibraryFrame(f) || isPackageFrame(f) ? "lib" : "")),
            ),
          ]
        : null,
    );
  }

  // ---- edges ----------------------------------------------------------------

  private edgesSection(g: GraphIndex, n: GNode): Child {
    const out = g.outOf(n.id);
    const inc = g.inOf(n.id);
    if (!out.length && !inc.length) return null;
    const list = (edges: GEdge[], dir: "out" | "in") =>
      h(
        "div",
        { class: "edge-list" },
        edges.map((e) => {
          const es = edgeStyle(e.kind);
          const extra = Object.entries(e.attrs)
            .filter(([k]) => k !== "op")
            .map(([k, v]) => `${k.replace(/_ns$/, "")}=${fmtAttr(k, v)}`)
            .join(" ");
          return h(
            "div",
            { class: "edge-row" },
            h("span", { class: "edge-kind", style: `--ec:${es.color}` }, dir === "out" ? `${e.kind} →` : `← ${e.kind}`),
            nodeChip(this.app, dir === "out" ? e.dst : e.src),
            e.attrs["op"] ? h("span", { class: "op" }, String(e.attrs["op"])) : null,
            extra ? h("div", { class: "edge-extra muted small" }, extra) : null,
          );
        }),
      );
    return h(
      "section",
      { class: "insp-sec" },
      out.length ? [h("h3", null, `Outgoing edges (${out.length})`), list(out, "out")] : null,
      inc.length ? [h("h3", null, `Incoming edges (${inc.length})`), list(inc, "in")] : null,
    );
  }

  // ---- attributes -----------------------------------------------------------

  private attrsSection(n: GNode): Child {
    const rows: [string, Child][] = [];
    for (const [k, v] of Object.entries(n.attrs).sort(([a], [b]) => a.localeCompare(b))) {
      if (HANDLED.has(k)) continue;
      rows.push([k, attrValue(k, v)]);
    }
    const m = meta(n);
    const metaRows: [string, Child][] = Object.entries(m)
      .filter(([k]) => k !== "ctx.location")
      .map(([k, v]) => [k, attrValue(k, v)]);
    return h(
      "section",
      { class: "insp-sec" },
      h("h3", null, "Attributes"),
      rows.length ? kv(rows) : h("div", { class: "muted" }, "none"),
      metaRows.length ? [h("h3", null, "Metadata"), kv(metaRows)] : null,
    );
  }

  // ---- events ---------------------------------------------------------------

  private eventsSection(g: GraphIndex, n: GNode): Child {
    const box = h("div", { class: "events", attrs: { "data-testid": "events" } }, h("span", { class: "muted" }, "loading events…"));
    const key = this.shownKey;
    this.app
      .events(n.id)
      .then((events) => {
        if (key !== this.shownKey) return;
        replace(box, renderEvents(this.app, n.id, events, g.capturedAtNs));
      })
      .catch((err: unknown) => {
        if (key !== this.shownKey) return;
        replace(box, h("pre", { class: "error" }, errorText(err)));
      });
    return h("section", { class: "insp-sec" }, h("h3", null, "Events"), box);
  }
}

function renderEvents(app: App, entityId: string, events: Event[], capturedAtNs: number): Child {
  if (events.length === 0) return h("span", { class: "muted" }, "No events for this entity in the snapshot's ring buffer.");
  const sorted = events.slice().sort((a, b) => a.ts_ns - b.ts_ns);
  return h(
    "ol",
    { class: "timeline-list" },
    sorted.map((ev) => {
      const parts = ev.name.split(".");
      const outcome = parts.length > 3 ? parts[parts.length - 1] : "";
      const attrs = Object.entries(ev.attrs ?? {})
        .map(([k, v]) => `${k}=${fmtAttr(k, v)}`)
        .join("  ");
      return h(
        "li",
        { class: `ev ev-${outcome}` },
        h("span", { class: "ev-time", title: fmtClock(ev.ts_ns) }, `−${fmtDuration(Math.max(0, capturedAtNs - ev.ts_ns))}`),
        h("span", { class: "ev-dot" }),
        h(
          "div",
          { class: "ev-body" },
          h("span", { class: "ev-name" }, ev.name),
          // The events API also returns events whose parent is this entity
          // (a task's channel.send.blocked is the channel's event).
          ev.entity_id !== entityId
            ? h("span", { class: "ev-parent" }, " on ", nodeChip(app, ev.entity_id))
            : ev.parent_entity_id
              ? h("span", { class: "ev-parent" }, " by ", nodeChip(app, ev.parent_entity_id))
              : null,
          attrs ? h("div", { class: "ev-attrs" }, attrs) : null,
        ),
      );
    }),
  );
}

function attrValue(key: string, v: unknown): Child {
  if (v !== null && typeof v === "object") {
    return h("pre", { class: "json" }, JSON.stringify(v, null, 1));
  }
  const text = fmtAttr(key, v);
  if (typeof v === "number" && key.endsWith("_ns")) return h("span", { title: `${v} ns` }, text);
  return text;
}

export interface DominantFrame {
  frame: string;
  share: number;
}

export function dominantFrames(a: Attrs): DominantFrame[] {
  const raw = a["dominant_frames"];
  if (!Array.isArray(raw)) return [];
  const out: DominantFrame[] = [];
  for (const f of raw) {
    if (f && typeof f === "object" && typeof (f as DominantFrame).frame === "string") {
      const share = Number((f as DominantFrame).share);
      out.push({ frame: (f as DominantFrame).frame, share: Number.isFinite(share) ? share : 0 });
    } else if (typeof f === "string") out.push({ frame: f, share: 0 });
  }
  return out;
}
