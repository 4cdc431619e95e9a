// SQL console: read-only SQL over the selected snapshot (POST /api/sql).
// The server scopes the views (nodes, edges, events, snapshot_processes,
// snapshot) to the snapshot; errors are shown exactly as the server says them.

import { ApiError, api } from "../api";
import type { App, Change } from "../app";
import { h, replace } from "../dom";
import { fmtCount } from "../format";
import type { SqlAnswer } from "../types";
import { DataTable } from "../table";
import { nodeChip } from "./widgets";

export const EXAMPLES: { title: string; sql: string }[] = [
  {
    title: "Blocked senders on full channels",
    sql: `SELECT e.src, n.label, json_extract(n.attrs,'$.depth') AS depth,
       json_extract(n.attrs,'$.capacity') AS capacity
FROM edges e JOIN nodes n ON n.id = e.dst
WHERE e.kind='needs' AND n.kind='channel'`,
  },
  {
    title: "Longest waits",
    sql: `SELECT e.src, e.dst, json_extract(e.attrs,'$.op') AS op,
       round(json_extract(e.attrs,'$.waited_ns') / 1e9, 3) AS waited_s
FROM edges e
WHERE e.kind='needs'
ORDER BY json_extract(e.attrs,'$.waited_ns') DESC
LIMIT 50`,
  },
  {
    title: "Lock holders and their waiters",
    sql: `SELECT h.dst AS resource, h.src AS holder, count(w.src) AS waiters
FROM edges h LEFT JOIN edges w ON w.dst = h.dst AND w.kind='needs'
WHERE h.kind='holds'
GROUP BY h.dst, h.src
ORDER BY waiters DESC`,
  },
  {
    title: "Nodes per process and kind",
    sql: `SELECT proc_key, kind, count(*) AS n
FROM nodes GROUP BY proc_key, kind ORDER BY n DESC`,
  },
  {
    title: "Where tasks are created",
    sql: `SELECT location, json_extract(attrs,'$.state') AS state, count(*) AS n
FROM nodes WHERE kind='task'
GROUP BY location, state ORDER BY n DESC`,
  },
  {
    title: "Latest events",
    sql: `SELECT ts_ns, entity_id, name, attrs
FROM events ORDER BY ts_ns DESC LIMIT 100`,
  },
];

const STORAGE_KEY = "peeps.sql.last";

type Row = { i: number; cells: unknown[] };

export class SqlView {
  readonly el: HTMLElement;
  private readonly editor = h("textarea", {
    class: "sql-editor",
    spellcheck: false,
    attrs: { "data-testid": "sql-editor", "aria-label": "SQL query" },
  });
  private readonly runBtn = h("button", { class: "btn primary", attrs: { "data-testid": "sql-run" } }, "Run  ⌃↵");
  private readonly meta = h("span", { class: "muted small", attrs: { "data-testid": "sql-meta" } });
  private readonly results = h("div", { class: "sql-results", attrs: { "data-testid": "sql-results" } });
  private readonly copyBtn = h("button", { class: "btn small", hidden: true, title: "Copy the result as tab-separated text" }, "copy TSV");
  private running = false;

  constructor(private readonly app: App) {
    this.editor.value = localStorage.getItem(STORAGE_KEY) ?? EXAMPLES[0]?.sql ?? "";
    this.editor.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        void this.run();
      }
    });
    this.runBtn.addEventListener("click", () => void this.run());
    this.copyBtn.addEventListener("click", () => this.copyTsv(this.copyBtn));
    const examples = h(
      "div",
      { class: "sql-examples" },
      h("div", { class: "filter-head" }, "Saved queries"),
      EXAMPLES.map((ex, i) =>
        h(
          "a",
          {
            href: "#",
            class: "sql-example",
            dataset: { example: String(i) },
            onclick: (ev: MouseEvent) => {
              ev.preventDefault();
              this.editor.value = ex.sql;
              void this.run();
            },
          },
          ex.title,
        ),
      ),
      h(
        "div",
        { class: "muted small sql-help" },
        "Views: ",
        h("code", null, "nodes"),
        " (proc_key, id, kind, label, attrs, location), ",
        h("code", null, "edges"),
        " (proc_key, src, dst, kind, attrs), ",
        h("code", null, "events"),
        ", ",
        h("code", null, "snapshot_processes"),
        ", ",
        h("code", null, "snapshot"),
        ". Attributes: ",
        h("code", null, "json_extract(attrs, '$.depth')"),
        ". Read-only; scoped to the snapshot in the header.",
      ),
    );
    this.el = h(
      "section",
      { class: "view view-sql" },
      examples,
      h(
        "div",
        { class: "sql-main" },
        this.editor,
        h("div", { class: "sql-bar" }, this.runBtn, this.meta, h("span", { class: "spacer" }), this.copyBtn),
        this.results,
      ),
    );
  }

  focus(): void {
    this.editor.focus();
  }

  update(_changes: Set<Change>): void {
    this.runBtn.disabled = this.running || this.app.snapshotId === null;
  }

  async run(): Promise<void> {
    const id = this.app.snapshotId;
    if (id === null || this.running) return;
    const sql = this.editor.value;
    localStorage.setItem(STORAGE_KEY, sql);
    this.running = true;
    this.runBtn.disabled = true;
    this.meta.textContent = "running…";
    const started = performance.now();
    try {
      const ans = await api.sql({ snapshot_id: id, sql, params: [] });
      const ms = Math.round(performance.now() - started);
      this.meta.textContent = `${fmtCount(ans.row_count)} row${ans.row_count === 1 ? "" : "s"}${ans.truncated ? " (truncated)" : ""} · ${ms} ms · snapshot #${id}`;
      this.showRows(ans);
    } catch (err) {
      this.meta.textContent = err instanceof ApiError && err.status ? `error ${err.status}` : "error";
      const msg = err instanceof Error ? err.message : String(err);
      this.copyBtn.hidden = true;
      replace(this.results, h("pre", { class: "sql-error", attrs: { "data-testid": "sql-error" } }, msg));
    } finally {
      this.running = false;
      this.runBtn.disabled = false;
    }
  }

  private last: SqlAnswer | null = null;

  /** The result as tab-separated text (pastes into a spreadsheet). */
  private copyTsv(btn: HTMLElement): void {
    const ans = this.last;
    if (!ans) return;
    const cell = (v: unknown) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v)).replace(/[\t\n]/g, " ");
    const text = [ans.columns.join("\t"), ...ans.rows.map((r) => r.map(cell).join("\t"))].join("\n");
    void navigator.clipboard?.writeText(text).then(
      () => {
        btn.textContent = "copied";
        window.setTimeout(() => (btn.textContent = "copy TSV"), 1200);
      },
      () => undefined,
    );
  }

  private showRows(ans: SqlAnswer): void {
    this.last = ans;
    this.copyBtn.hidden = false;
    const table = new DataTable<Row>({
      testId: "sql-table",
      limit: 500,
      rowKey: (r) => String(r.i),
      emptyText: "The query returned no rows.",
      onActivate: (r) => {
        const id = r.cells.find((c) => typeof c === "string" && this.app.graph?.nodes.has(c));
        if (typeof id === "string") this.app.select(id);
      },
      columns: ans.columns.map((name, ci) => ({
        title: name,
        cls: typeof ans.rows[0]?.[ci] === "number" ? "num" : undefined,
        render: (r: Row) => this.cell(r.cells[ci]),
        sort: (r: Row) => {
          const v = r.cells[ci];
          return typeof v === "number" ? v : String(v ?? "");
        },
      })),
    });
    table.setRows(ans.rows.map((cells, i) => ({ i, cells })));
    replace(this.results, table.el);
  }

  private cell(v: unknown): HTMLElement | string {
    if (v === null || v === undefined) return h("span", { class: "null" }, "NULL");
    if (typeof v === "string") {
      if (this.app.graph?.nodes.has(v)) return nodeChip(this.app, v);
      if (v.length > 160) return h("span", { title: v, class: "mono" }, `${v.slice(0, 159)}…`);
      return h("span", { class: "mono" }, v);
    }
    if (typeof v === "number") return h("span", { class: "num" }, String(v));
    return JSON.stringify(v);
  }
}
