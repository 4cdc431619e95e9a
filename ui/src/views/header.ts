// Header: processes in the current snapshot, snapshot time and age, the
// timeline across recent snapshots, live auto-refresh and "Jump now".

import type { App, Change } from "../app";
import { h, replace } from "../dom";
import { fmtAge, fmtClock, fmtCount, fmtDateTime } from "../format";
import type { SnapshotRecord } from "../types";

const MAX_CHIPS = 3;

export class Header {
  readonly el: HTMLElement;
  private readonly procs = h("div", { class: "procs", attrs: { "data-testid": "header-processes" } });
  private readonly more = h("span", { class: "procs-more" });
  private readonly snapInfo = h("div", { class: "snap-info", attrs: { "data-testid": "snapshot-info" } });
  private readonly timeline = h("div", { class: "timeline" });
  private readonly slider = h("input", {
    type: "range",
    min: "0",
    max: "0",
    value: "0",
    class: "timeline-range",
    title: "Recent snapshots (oldest left, newest right). Keys: [ and ]",
    attrs: { "data-testid": "timeline" },
  });
  private readonly ticks = h("div", { class: "timeline-ticks" });
  private readonly liveBtn = h("button", { class: "btn toggle", attrs: { "data-testid": "live-toggle" } });
  private readonly jumpBtn = h("button", { class: "btn primary", attrs: { "data-testid": "jump-now" } }, "Jump now");
  private readonly connected = h("span", { class: "connected" });
  private readonly progress = h("span", { class: "in-flight", attrs: { "data-testid": "in-flight" } });
  private usable: SnapshotRecord[] = [];

  constructor(private readonly app: App) {
    const prev = h("button", { class: "btn icon", title: "Older snapshot ([)", onclick: () => app.step(-1) }, "‹");
    const next = h("button", { class: "btn icon", title: "Newer snapshot (])", onclick: () => app.step(1) }, "›");
    this.slider.addEventListener("input", () => {
      // usable is newest first; the slider runs oldest → newest.
      const idx = this.usable.length - 1 - Number(this.slider.value);
      const rec = this.usable[idx];
      if (rec) this.app.setSnapshot(rec.snapshot_id, { live: idx === 0 && this.app.live });
    });
    this.liveBtn.addEventListener("click", () => app.setLive(!app.live));
    this.jumpBtn.addEventListener("click", () => void app.jumpNow());
    replace(
      this.timeline,
      prev,
      h("div", { class: "timeline-track" }, this.ticks, this.slider),
      next,
    );
    this.el = h(
      "header",
      { class: "topbar" },
      h("div", { class: "brand" }, h("span", { class: "logo" }, "◉"), "peeps"),
      this.snapInfo,
      this.timeline,
      this.procs,
      this.more,
      h("div", { class: "spacer" }),
      this.progress,
      this.connected,
      this.liveBtn,
      this.jumpBtn,
      h(
        "button",
        {
          class: "btn icon",
          title: "Keyboard shortcuts (?)",
          onclick: () => document.dispatchEvent(new KeyboardEvent("keydown", { key: "?" })),
        },
        "?",
      ),
    );
    app.subscribe((c) => this.update(c));
  }

  update(changes: Set<Change>): void {
    const app = this.app;
    if (changes.has("snapshots") || changes.has("data") || changes.has("status")) {
      this.renderTimeline();
      this.renderSnapInfo();
      this.renderProcs();
    }
    if (changes.has("connected")) {
      const f = app.inFlight;
      this.progress.hidden = !f;
      if (f) {
        this.progress.textContent = `snapshot #${f.snapshot_id}: ${f.responded}/${f.requested} answered`;
        this.progress.title = f.pending.length ? `waiting for: ${f.pending.join(", ")}` : "";
      }
      const n = app.connected.length;
      this.connected.textContent = `${n} connected`;
      this.connected.title = app.connected.map((p) => `${p.process_name} (pid ${p.pid}) from ${p.peer}`).join("\n") || "no process connected";
      this.connected.classList.toggle("none", n === 0);
    }
    if (changes.has("live") || changes.has("status")) {
      this.liveBtn.textContent = app.live ? "● Live" : "○ Live";
      this.liveBtn.classList.toggle("on", app.live);
      this.liveBtn.title = app.live ? "Auto-refresh on: follows the newest snapshot" : "Auto-refresh off: this snapshot is pinned";
      this.liveBtn.setAttribute("aria-pressed", String(app.live));
      this.jumpBtn.disabled = app.jumping;
      this.jumpBtn.textContent = app.jumping ? "Snapshotting…" : "Jump now";
    }
  }

  private renderSnapInfo(): void {
    const app = this.app;
    const rec = app.currentRecord();
    if (!rec) {
      replace(
        this.snapInfo,
        h("span", { class: "muted" }, app.loading ? "loading…" : app.snapshots.length ? "no snapshot selected" : "no snapshots yet"),
      );
      return;
    }
    const at = rec.captured_at_ns ?? rec.requested_at_ns;
    replace(
      this.snapInfo,
      h("span", { class: "snap-id" }, `#${rec.snapshot_id}`),
      h("span", { class: "snap-time", title: fmtDateTime(at) }, fmtClock(at)),
      h("span", { class: "snap-age tick-age", dataset: { at: String(at) } }, fmtAge(at)),
      h("span", { class: `badge status-${rec.status}`, title: `trigger: ${rec.trigger}` }, rec.status),
      app.loading ? h("span", { class: "spinner", title: "loading" }) : null,
    );
  }

  private renderTimeline(): void {
    const app = this.app;
    this.usable = app.snapshots.filter((s) => s.status !== "in_progress");
    const n = this.usable.length;
    this.slider.max = String(Math.max(0, n - 1));
    const idx = this.usable.findIndex((s) => s.snapshot_id === app.snapshotId);
    this.slider.value = String(idx < 0 ? n - 1 : n - 1 - idx);
    this.slider.disabled = n < 2;
    // One tick per snapshot, coloured by outcome, so gaps and partial
    // snapshots stand out.
    const ordered = this.usable.slice().reverse();
    replace(
      this.ticks,
      ordered.map((s) =>
        h("span", {
          class: `tl-tick status-${s.status}${s.snapshot_id === app.snapshotId ? " cur" : ""}`,
          title: `#${s.snapshot_id} ${fmtClock(s.captured_at_ns ?? s.requested_at_ns)} ${s.status} (${s.trigger})`,
        }),
      ),
    );
  }

  private renderProcs(): void {
    const g = this.app.graph;
    if (!g) {
      replace(this.procs);
      return;
    }
    // Processes that did not answer come first: they are what a partial
    // snapshot is about.  Beyond a few, the rest fold into "+N".
    const rank = (st: string) => (st === "responded" ? 1 : 0);
    const procs = g.processes
      .slice()
      .sort((a, b) => rank(a.status) - rank(b.status) || a.process_name.localeCompare(b.process_name));
    const shown = procs.slice(0, MAX_CHIPS);
    const rest = procs.slice(MAX_CHIPS);
    replace(
      this.procs,
      shown.map((p) =>
        h(
          "span",
          {
            class: `proc-chip st-${p.status}`,
            title: `${p.proc_key}\nstatus: ${p.status}${p.error ? `\nerror: ${p.error}` : ""}\n${fmtCount(p.node_count)} nodes, ${fmtCount(p.edge_count)} edges, ${fmtCount(p.event_count)} events`,
          },
          h("span", { class: "dot" }),
          h("span", { class: "proc-name" }, p.process_name),
          p.status !== "responded" ? h("span", { class: "proc-st" }, p.status) : null,
        ),
      ),
    );
    replace(
      this.more,
      rest.length
        ? h(
            "a",
            {
              href: "#",
              class: "proc-chip more",
              title: rest.map((p) => `${p.process_name} ${p.pid}: ${p.status}`).join("\n"),
              onclick: (ev: MouseEvent) => {
                ev.preventDefault();
                this.app.setView("processes");
              },
            },
            `+${rest.length}`,
          )
        : null,
    );
  }
}
