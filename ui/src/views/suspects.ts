// Suspects: the landing view.  Ranked reasons to look at something, each one
// click away from the inspector and two from the focused graph.

import type { App, Change } from "../app";
import { h, replace } from "../dom";
import { fmtCount } from "../format";
import type { Suspect } from "../types";
import { DataTable } from "../table";
import { emptyState, nodeChip, tickSpan } from "./widgets";

interface Row {
  rank: number;
  s: Suspect;
}

function suspectKey(r: Row): string {
  return `${r.s.kind}|${r.s.proc_key ?? ""}|${r.s.node_ids.join(",")}`;
}

export class SuspectsView {
  readonly el: HTMLElement;
  private readonly summary = h("div", { class: "view-summary" });
  private readonly table: DataTable<Row>;
  private readonly body = h("div", { class: "view-body" });
  private selectedKey: string | null = null;

  constructor(private readonly app: App) {
    this.table = new DataTable<Row>({
      testId: "suspects-table",
      // Stable across snapshots, so live refresh keeps the selected suspect.
      rowKey: suspectKey,
      limit: 300,
      rowClass: (r) => `row-sev-${r.s.severity}`,
      emptyText: "No suspects in this snapshot: nothing is waiting long, full, or in a cycle.",
      onSelect: (r) => this.pick(r),
      onActivate: (r) => app.showInGraph(r.s.node_ids),
      columns: [
        { title: "#", cls: "num narrow", render: (r) => String(r.rank), sort: (r) => r.rank, width: "36px" },
        {
          title: "severity",
          cls: "narrow",
          width: "84px",
          render: (r) => h("span", { class: `sev sev-${r.s.severity}` }, r.s.severity),
          sort: (r) => r.rank,
        },
        {
          title: "suspect",
          render: (r) =>
            h(
              "div",
              { class: "suspect-cell" },
              h("div", { class: "suspect-title" }, h("span", { class: "suspect-kind" }, r.s.kind), r.s.title),
              h("div", { class: "suspect-reason" }, r.s.reason),
            ),
        },
        {
          title: "for",
          cls: "num",
          width: "96px",
          sort: (r) => -(r.s.duration_ns ?? 0),
          render: (r) =>
            r.s.duration_ns === null || r.s.duration_ns === undefined
              ? "—"
              : tickSpan(r.s.duration_ns, this.app.graph?.capturedAtNs ?? null),
        },
        {
          title: "nodes",
          width: "34%",
          render: (r) =>
            h(
              "div",
              { class: "chips" },
              r.s.node_ids.slice(0, 4).map((id) => nodeChip(this.app, id)),
              r.s.node_ids.length > 4 ? h("span", { class: "muted" }, ` +${r.s.node_ids.length - 4}`) : null,
            ),
        },
        {
          title: "",
          cls: "narrow",
          width: "64px",
          render: (r) =>
            h(
              "button",
              {
                class: "btn small",
                title: "Show these nodes in the graph (Enter)",
                onclick: (ev: MouseEvent) => {
                  ev.stopPropagation();
                  app.showInGraph(r.s.node_ids);
                },
              },
              "graph →",
            ),
        },
      ],
    });
    this.el = h("section", { class: "view view-suspects" }, this.summary, this.body);
  }

  private pick(r: Row): void {
    this.selectedKey = suspectKey(r);
    const first = r.s.node_ids.find((id) => this.app.graph?.nodes.has(id)) ?? r.s.node_ids[0] ?? null;
    this.app.select(first, { highlight: r.s.node_ids });
  }

  focus(): void {
    this.table.focus();
  }

  update(changes: Set<Change>): void {
    if (!changes.has("data") && !changes.has("status")) return;
    const app = this.app;
    if (!app.graph || !app.suspects) {
      replace(this.summary);
      replace(this.body, emptyState(app));
      return;
    }
    const g = app.graph;
    const suspects = app.suspects;
    const counts = new Map<string, number>();
    for (const s of suspects) counts.set(s.severity, (counts.get(s.severity) ?? 0) + 1);
    replace(
      this.summary,
      h("strong", null, `${suspects.length} suspect${suspects.length === 1 ? "" : "s"}`),
      [...counts].map(([sev, n]) => h("span", { class: `sev sev-${sev}` }, `${n} ${sev}`)),
      h(
        "span",
        { class: "muted" },
        `${g.processes.length} process${g.processes.length === 1 ? "" : "es"} · ${fmtCount(g.nodes.size)} nodes · ${fmtCount(g.edges.length)} edges`,
      ),
      suspects.length
        ? h("span", { class: "muted hint" }, "↑/↓ select · Enter opens the graph focused on the suspect")
        : null,
    );
    const rows = suspects.map((s, i) => ({ rank: i + 1, s }));
    this.table.setRows(rows, this.selectedKey);
    replace(this.body, this.table.el);
  }
}
