// Requests: RPC request and response nodes with the wait chain through them
// (who waits on the request … what the request waits on), across processes.

import type { App, Change } from "../app";
import { h, replace } from "../dom";
import { fmtDuration } from "../format";
import { type GNode, type GraphIndex, num } from "../model";
import { subtitle } from "../summary";
import { DataTable } from "../table";
import { emptyState, nodeChip } from "./widgets";

const RPC_KINDS = new Set(["request", "response"]);
const MAX_HOPS = 6;

/** Follow `needs` edges from `id` (downstream) or into it (upstream). */
export function needsChain(g: GraphIndex, id: string, dir: "up" | "down"): string[] {
  const chain: string[] = [];
  const seen = new Set([id]);
  let cur = id;
  for (let i = 0; i < MAX_HOPS; i++) {
    const edges = dir === "down" ? g.outOf(cur, "needs") : g.inOf(cur, "needs");
    const next = edges.map((e) => (dir === "down" ? e.dst : e.src)).find((n) => !seen.has(n));
    if (!next) break;
    seen.add(next);
    chain.push(next);
    cur = next;
  }
  return dir === "up" ? chain.reverse() : chain;
}

/** The request/response on the other side of `n`, joined by any edge. */
function peers(g: GraphIndex, n: GNode): string[] {
  const out: string[] = [];
  for (const e of [...g.outOf(n.id), ...g.inOf(n.id)]) {
    const other = e.src === n.id ? e.dst : e.src;
    const o = g.nodes.get(other);
    if (o && RPC_KINDS.has(o.kind) && !out.includes(other)) out.push(other);
  }
  return out;
}

export class RequestsView {
  readonly el: HTMLElement;
  private readonly summary = h("div", { class: "view-summary" });
  private readonly body = h("div", { class: "view-body" });
  private readonly table: DataTable<GNode>;

  constructor(private readonly app: App) {
    this.table = new DataTable<GNode>({
      testId: "requests-table",
      limit: 300,
      rowKey: (n) => n.id,
      rowClass: (n) => (n.ghost ? "ghost-row" : ""),
      emptyText: "No request or response nodes in this snapshot.",
      onSelect: (n) => app.select(n.id),
      onActivate: (n) => app.showInGraph([n.id], 3),
      columns: [
        { title: "kind", width: "80px", render: (n) => n.kind, sort: (n) => n.kind },
        { title: "name", render: (n) => nodeChip(app, n.id), sort: (n) => n.label },
        { title: "process", cls: "nowrap", width: "160px", render: (n) => h("span", { class: "muted" }, n.proc_key), sort: (n) => n.proc_key },
        { title: "state", cls: "nowrap", width: "160px", render: (n) => subtitle(n.kind, n.attrs) },
        {
          title: "age",
          cls: "num",
          width: "80px",
          render: (n) => fmtDuration(num(n.attrs["age_ns"])),
          sort: (n) => -(num(n.attrs["age_ns"]) ?? 0),
        },
        {
          title: "chain (needs →)",
          width: "45%",
          render: (n) => {
            const g = this.app.graph;
            if (!g) return null;
            const up = needsChain(g, n.id, "up");
            const down = needsChain(g, n.id, "down");
            const pair = peers(g, n).filter((p) => !up.includes(p) && !down.includes(p));
            const arrow = () => h("span", { class: "chain-arrow" }, "→");
            const items: (HTMLElement | string)[] = [];
            for (const id of up) items.push(nodeChip(app, id), arrow());
            items.push(h("span", { class: "chain-self" }, nodeChip(app, n.id)));
            for (const id of down) items.push(arrow(), nodeChip(app, id));
            return h(
              "div",
              { class: "chain" },
              items,
              pair.length ? h("span", { class: "chain-pair muted" }, " ⇄ ", pair.map((p) => nodeChip(app, p))) : null,
            );
          },
        },
      ],
    });
    this.el = h("section", { class: "view view-requests" }, this.summary, this.body);
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
    const rows = [...g.nodes.values()].filter((n) => RPC_KINDS.has(n.kind));
    const ghosts = rows.filter((n) => n.ghost).length;
    replace(
      this.summary,
      h("strong", null, `${rows.length} request/response node${rows.length === 1 ? "" : "s"}`),
      ghosts ? h("span", { class: "muted" }, `${ghosts} ghost (other side not in this snapshot)`) : null,
      h("span", { class: "muted hint" }, "Enter focuses the graph on the chain"),
    );
    this.table.setRows(rows, this.app.selected);
    replace(this.body, this.table.el);
  }
}
