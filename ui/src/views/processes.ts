// Processes: who answered this snapshot (responded / timeout / disconnected)
// with their counts, and who is connected right now.

import type { App, Change } from "../app";
import { h, replace } from "../dom";
import { fmtAge, fmtClock, fmtCount } from "../format";
import type { ConnectedProcess, SnapshotProcess } from "../types";
import { DataTable } from "../table";
import { emptyState, kv } from "./widgets";

export class ProcessesView {
  readonly el: HTMLElement;
  private readonly body = h("div", { class: "view-body scroll" });
  private readonly table: DataTable<SnapshotProcess>;
  private readonly connectedTable: DataTable<ConnectedProcess>;

  constructor(private readonly app: App) {
    this.table = new DataTable<SnapshotProcess>({
      testId: "processes-table",
      rowKey: (p) => p.proc_key,
      emptyText: "No process was asked in this snapshot.",
      onActivate: (p) => {
        const first = [...(app.graph?.nodes.values() ?? [])].find((n) => n.proc_key === p.proc_key);
        if (first) app.select(first.id);
      },
      columns: [
        { title: "process", render: (p) => h("span", null, h("b", null, p.process_name), h("span", { class: "muted" }, `  ${p.proc_key}`)), sort: (p) => p.process_name },
        { title: "pid", cls: "num", width: "80px", render: (p) => String(p.pid), sort: (p) => p.pid },
        { title: "status", width: "120px", render: (p) => h("span", { class: `pstatus st-${p.status}` }, p.status), sort: (p) => p.status },
        { title: "nodes", cls: "num", width: "90px", render: (p) => fmtCount(p.node_count), sort: (p) => -p.node_count },
        { title: "edges", cls: "num", width: "90px", render: (p) => fmtCount(p.edge_count), sort: (p) => -p.edge_count },
        { title: "events", cls: "num", width: "90px", render: (p) => fmtCount(p.event_count), sort: (p) => -p.event_count },
        { title: "responded at", width: "120px", render: (p) => fmtClock(p.responded_at_ns) },
        { title: "error", render: (p) => (p.error ? h("span", { class: "err" }, p.error) : "") },
      ],
    });
    this.connectedTable = new DataTable<ConnectedProcess>({
      testId: "connected-table",
      rowKey: (p) => p.proc_key,
      emptyText: "No process is connected now.",
      columns: [
        { title: "process", render: (p) => h("span", null, h("b", null, p.process_name), h("span", { class: "muted" }, `  ${p.proc_key}`)) },
        { title: "pid", cls: "num", width: "80px", render: (p) => String(p.pid) },
        { title: "peer", width: "180px", render: (p) => h("span", { class: "mono" }, p.peer) },
        { title: "connected", width: "140px", render: (p) => fmtAge(p.connected_at_ns) },
      ],
    });
    this.el = h("section", { class: "view view-processes" }, this.body);
  }

  focus(): void {
    this.table.focus();
  }

  update(changes: Set<Change>): void {
    if (!changes.has("data") && !changes.has("status") && !changes.has("connected")) return;
    const app = this.app;
    const g = app.graph;
    this.connectedTable.setRows(app.connected);
    if (!g) {
      replace(this.body, emptyState(app), h("h2", null, "Connected now"), this.connectedTable.el);
      return;
    }
    const s = g.snapshot;
    this.table.setRows(g.processes);
    replace(
      this.body,
      h("h2", null, `Snapshot #${s.snapshot_id}`),
      kv([
        ["status", h("span", { class: `badge status-${s.status}` }, s.status)],
        ["trigger", s.trigger],
        ["requested / responded", `${s.requested} / ${s.responded}`],
        ["timed out / disconnected", `${s.timed_out} / ${s.disconnected}`],
        ["captured at", fmtClock(s.captured_at_ns)],
      ]),
      h("h2", null, "Processes in this snapshot"),
      this.table.el,
      h("h2", null, "Connected now"),
      this.connectedTable.el,
    );
  }
}
