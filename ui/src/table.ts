// A dense data table with keyboard navigation: ↑/↓ (and j/k) move the
// selection, PgUp/PgDn/Home/End jump, Enter activates; click selects,
// double-click activates.  Used by every tabular view.

import { type Child, h, replace } from "./dom";

export interface Column<T> {
  title: string;
  cls?: string;
  width?: string;
  render: (row: T) => Child;
  /** Optional sort key; clicking the header sorts by it. */
  sort?: (row: T) => number | string;
}

export interface TableOptions<T> {
  columns: Column<T>[];
  rowKey: (row: T) => string;
  onSelect?: (row: T) => void;
  onActivate?: (row: T) => void;
  emptyText?: Child;
  rowClass?: (row: T) => string;
  testId?: string;
  /** Rows built at first; the rest behind a "show all" row (long suspect lists). */
  limit?: number;
}

export class DataTable<T> {
  readonly el: HTMLDivElement;
  private readonly tbody: HTMLTableSectionElement;
  private readonly thead: HTMLTableSectionElement;
  private rows: T[] = [];
  private view: T[] = [];
  private selected = -1;
  private sortCol = -1;
  private sortDesc = false;
  private rowEls: HTMLTableRowElement[] = [];
  private showAll = false;

  constructor(private readonly opts: TableOptions<T>) {
    this.thead = h("thead");
    this.tbody = h("tbody");
    const table = h("table", { class: "data" }, this.thead, this.tbody);
    this.el = h(
      "div",
      {
        class: "table-wrap",
        tabIndex: 0,
        attrs: { role: "grid", ...(opts.testId ? { "data-testid": opts.testId } : {}) },
        onkeydown: (ev: KeyboardEvent) => this.onKey(ev),
      },
      table,
    );
    this.renderHead();
  }

  private renderHead(): void {
    const cells = this.opts.columns.map((c, i) =>
      h(
        "th",
        {
          class: `${c.cls ?? ""}${c.sort ? " sortable" : ""}`,
          style: c.width ? `width:${c.width}` : undefined,
          onclick: c.sort ? () => this.sortBy(i) : undefined,
        },
        c.title,
        this.sortCol === i ? (this.sortDesc ? " ▾" : " ▴") : "",
      ),
    );
    replace(this.thead, h("tr", null, cells));
  }

  private sortBy(i: number): void {
    if (this.sortCol === i) this.sortDesc = !this.sortDesc;
    else {
      this.sortCol = i;
      this.sortDesc = false;
    }
    const key = this.selectedRow() ? this.opts.rowKey(this.selectedRow() as T) : null;
    this.renderHead();
    this.setRows(this.rows, key);
  }

  setRows(rows: T[], selectedKey?: string | null): void {
    const scrollTop = this.el.scrollTop;
    this.rows = rows;
    this.view = rows.slice();
    const col = this.opts.columns[this.sortCol];
    if (col?.sort) {
      const key = col.sort;
      const dir = this.sortDesc ? -1 : 1;
      this.view.sort((a, b) => {
        const ka = key(a);
        const kb = key(b);
        return (ka < kb ? -1 : ka > kb ? 1 : 0) * dir;
      });
    }
    const limit = this.showAll ? Infinity : (this.opts.limit ?? Infinity);
    // Keep the selected row built even when it lies past the limit.
    const wanted = selectedKey ? this.view.findIndex((r) => this.opts.rowKey(r) === selectedKey) : -1;
    const count = Math.min(this.view.length, Math.max(limit, wanted + 1));
    this.rowEls = this.view.slice(0, count).map((row, i) => {
      const tr = h(
        "tr",
        {
          class: this.opts.rowClass?.(row) ?? "",
          dataset: { key: this.opts.rowKey(row) },
          onclick: () => this.select(i, true),
          ondblclick: () => this.activate(i),
        },
        this.opts.columns.map((c) => h("td", { class: c.cls }, c.render(row))),
      );
      return tr;
    });
    if (this.rowEls.length === 0) {
      replace(
        this.tbody,
        h("tr", { class: "empty" }, h("td", { colSpan: this.opts.columns.length }, this.opts.emptyText ?? "Nothing here.")),
      );
    } else {
      replace(this.tbody, this.rowEls);
      if (count < this.view.length) {
        const more = h(
          "tr",
          { class: "more-rows" },
          h(
            "td",
            { colSpan: this.opts.columns.length },
            h(
              "a",
              {
                href: "#",
                onclick: (ev: MouseEvent) => {
                  ev.preventDefault();
                  this.showAll = true;
                  const key = this.selectedRow() ? this.opts.rowKey(this.selectedRow() as T) : null;
                  this.setRows(this.rows, key);
                },
              },
              `Show all ${this.view.length.toLocaleString("en-US")} rows`,
            ),
            h("span", { class: "muted" }, ` (${count.toLocaleString("en-US")} shown)`),
          ),
        );
        this.tbody.appendChild(more);
      }
    }
    this.selected = -1;
    if (selectedKey) {
      const idx = this.view.findIndex((r) => this.opts.rowKey(r) === selectedKey);
      if (idx >= 0) this.select(idx, false, false);
    }
    // A refresh (live mode) leaves the table where the reader had scrolled it.
    this.el.scrollTop = scrollTop;
  }

  selectedRow(): T | undefined {
    return this.view[this.selected];
  }

  /** Highlight the row with this key without notifying (e.g. state came from elsewhere). */
  markKey(key: string | null): void {
    let idx = key === null ? -1 : this.view.findIndex((r) => this.opts.rowKey(r) === key);
    if (idx >= this.rowEls.length) idx = -1;
    if (idx === this.selected) return;
    this.rowEls[this.selected]?.classList.remove("sel");
    this.selected = idx;
    this.rowEls[idx]?.classList.add("sel");
  }

  select(i: number, notify: boolean, scroll = true): void {
    if (i < 0 || i >= this.rowEls.length) return;
    this.rowEls[this.selected]?.classList.remove("sel");
    this.rowEls[this.selected]?.setAttribute("aria-selected", "false");
    this.selected = i;
    const tr = this.rowEls[i];
    tr?.classList.add("sel");
    tr?.setAttribute("aria-selected", "true");
    if (scroll) tr?.scrollIntoView({ block: "nearest" });
    const row = this.view[i];
    if (notify && row !== undefined) this.opts.onSelect?.(row);
  }

  private activate(i: number): void {
    const row = this.view[i];
    if (row !== undefined) this.opts.onActivate?.(row);
  }

  focus(): void {
    this.el.focus({ preventScroll: true });
  }

  private onKey(ev: KeyboardEvent): void {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const n = this.rowEls.length;
    if (n === 0) return;
    const page = Math.max(1, Math.floor(this.el.clientHeight / 24) - 1);
    let next: number | null = null;
    switch (ev.key) {
      case "ArrowDown":
      case "j":
        next = Math.min(n - 1, this.selected + 1);
        break;
      case "ArrowUp":
      case "k":
        next = Math.max(0, this.selected < 0 ? 0 : this.selected - 1);
        break;
      case "PageDown":
        next = Math.min(n - 1, this.selected + page);
        break;
      case "PageUp":
        next = Math.max(0, this.selected - page);
        break;
      case "Home":
        next = 0;
        break;
      case "End":
        next = n - 1;
        break;
      case "Enter":
        ev.preventDefault();
        if (this.selected >= 0) this.activate(this.selected);
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (next !== null && next !== this.selected) this.select(next, true);
  }
}
