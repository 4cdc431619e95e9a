// Threads: sampled threads with the sampler's verdict (blocked, busy, idle …)
// and their dominant frames.

import type { App, Change } from "../app";
import { h, replace } from "../dom";
import type { GNode } from "../model";
import { DataTable } from "../table";
import { dominantFrames } from "./inspector";
import { emptyState, frameEl, nodeChip, tickSpan } from "./widgets";

export class ThreadsView {
  readonly el: HTMLElement;
  private readonly summary = h("div", { class: "view-summary" });
  private readonly body = h("div", { class: "view-body" });
  private readonly table: DataTable<GNode>;

  constructor(private readonly app: App) {
    this.table = new DataTable<GNode>({
      testId: "threads-table",
      rowKey: (n) => n.id,
      emptyText: "No threads sampled in this snapshot.",
      onSelect: (n) => app.select(n.id),
      onActivate: (n) => app.showInGraph([n.id]),
      columns: [
        { title: "thread", width: "240px", render: (n) => nodeChip(app, n.id), sort: (n) => n.label },
        { title: "process", cls: "nowrap", width: "150px", render: (n) => h("span", { class: "muted" }, n.proc_key), sort: (n) => n.proc_key },
        {
          title: "verdict",
          width: "110px",
          render: (n) => {
            const v = n.attrs["verdict"];
            return typeof v === "string" ? h("span", { class: `verdict v-${v}` }, v) : h("span", { class: "muted" }, "—");
          },
          sort: (n) => String(n.attrs["verdict"] ?? ""),
        },
        {
          title: "for",
          cls: "num",
          width: "80px",
          render: (n) => {
            const ns = n.attrs["verdict_ns"];
            return typeof ns === "number" ? tickSpan(ns, this.app.graph?.capturedAtNs ?? null) : "";
          },
        },
        {
          title: "cpu",
          cls: "num",
          width: "64px",
          render: (n) => {
            const c = n.attrs["cpu_share"];
            return typeof c === "number" ? `${Math.round(c * 100)}%` : "—";
          },
          sort: (n) => -(Number(n.attrs["cpu_share"]) || 0),
        },
        {
          title: "samples",
          cls: "num",
          width: "70px",
          render: (n) => (typeof n.attrs["samples"] === "number" ? String(n.attrs["samples"]) : "—"),
        },
        {
          title: "dominant frames",
          render: (n) => {
            const frames = dominantFrames(n.attrs).slice(0, 3);
            if (!frames.length) return h("span", { class: "muted" }, "no samples");
            return h(
              "div",
              { class: "frames" },
              frames.map((f) =>
                h(
                  "div",
                  { class: "dom-frame" },
                  h("span", { class: "share-bar", title: `${Math.round(f.share * 100)}% of samples` }, h("span", { style: `width:${Math.round(f.share * 100)}%` })),
                  h("span", { class: "share" }, `${Math.round(f.share * 100)}%`),
                  frameEl(f.frame),
                ),
              ),
            );
          },
        },
      ],
    });
    this.el = h("section", { class: "view view-threads" }, this.summary, this.body);
  }

  focus(): void {
    this.table.focus();
  }

  update(changes: Set<Change>): void {
    if (changes.has("selection")) this.table.markKey(this.app.selected);
    if (!changes.has("data") && !changes.has("status")) return;
    const g = this.app.graph;
    if (!g) {
      replace(this.summary);
      replace(this.body, emptyState(this.app));
      return;
    }
    const rows = [...g.nodes.values()].filter((n) => n.kind === "thread");
    if (rows.length === 0) {
      replace(this.summary);
      replace(
        this.body,
        h(
          "div",
          { class: "empty-state", attrs: { "data-testid": "threads-empty" } },
          h("div", { class: "big" }, "No threads sampled in this snapshot"),
          h("p", { class: "muted" }, "Thread nodes appear when a process runs the peeps thread sampler."),
        ),
      );
      return;
    }
    const verdicts = new Map<string, number>();
    for (const n of rows) {
      const v = String(n.attrs["verdict"] ?? "unknown");
      verdicts.set(v, (verdicts.get(v) ?? 0) + 1);
    }
    replace(
      this.summary,
      h("strong", null, `${rows.length} thread${rows.length === 1 ? "" : "s"}`),
      [...verdicts].map(([v, c]) => h("span", { class: `verdict v-${v}` }, `${c} ${v}`)),
    );
    this.table.setRows(rows, this.app.selected);
    replace(this.body, this.table.el);
  }
}
