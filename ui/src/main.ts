// Entry point: lays out the page, wires the views to the app state and the
// URL hash, and starts polling and the ticking clock.

import "./style.css";
import { App, type Change, VIEWS, type ViewName, parseHash } from "./app";
import { h, replace } from "./dom";
import { GraphView } from "./graph/view";
import { Header } from "./views/header";
import { Inspector } from "./views/inspector";
import { ProcessesView } from "./views/processes";
import { RequestsView } from "./views/requests";
import { SqlView } from "./views/sql";
import { SuspectsView } from "./views/suspects";
import { ThreadsView } from "./views/threads";
import { tickAll } from "./views/widgets";

interface View {
  el: HTMLElement;
  focus?: () => void;
  update?: (changes: Set<Change>) => void;
}

function boot(root: HTMLElement): void {
  const app = new App();
  const header = new Header(app);
  const graph = new GraphView(app);
  const views: Record<ViewName, View> = {
    suspects: new SuspectsView(app),
    graph,
    requests: new RequestsView(app),
    threads: new ThreadsView(app),
    processes: new ProcessesView(app),
    sql: new SqlView(app),
  };
  const inspector = new Inspector(app);
  const banner = h("div", { class: "banner", attrs: { "data-testid": "banner" } });
  const tabs = h(
    "nav",
    { class: "tabs", attrs: { role: "tablist" } },
    VIEWS.map((v) =>
      h(
        "button",
        {
          class: "tab",
          dataset: { view: v.name },
          title: `${v.title} (${v.key})`,
          attrs: { role: "tab", "data-testid": `tab-${v.name}` },
          onclick: () => app.setView(v.name),
        },
        v.title,
        v.name === "suspects" ? h("span", { class: "tab-count", dataset: { count: "suspects" } }) : null,
      ),
    ),
  );
  const viewHost = h("div", { class: "view-host" }, Object.values(views).map((v) => v.el));
  const help = helpPanel();
  replace(
    root,
    help,
    header.el,
    h("div", { class: "workspace" }, h("div", { class: "main-col" }, tabs, banner, viewHost), inspector.el),
  );

  // Tabular views render only while visible: a hidden view collects the
  // changes it missed and catches up when it is shown (a 2,000-node snapshot
  // costs nothing in the tabs nobody is looking at).
  const missed = new Map<ViewName, Set<Change>>();
  app.subscribe((changes) => {
    for (const [name, v] of Object.entries(views) as [ViewName, View][]) {
      if (!v.update || v === graph) continue;
      const acc = missed.get(name) ?? new Set<Change>();
      for (const c of changes) acc.add(c);
      if (name === app.view) {
        missed.delete(name);
        v.update(acc);
      } else missed.set(name, acc);
    }
  });
  app.subscribe((changes) => {
    if (changes.has("view")) {
      for (const [name, v] of Object.entries(views)) v.el.hidden = name !== app.view;
      for (const t of tabs.querySelectorAll<HTMLElement>(".tab")) {
        const on = t.dataset["view"] === app.view;
        t.classList.toggle("active", on);
        t.setAttribute("aria-selected", String(on));
      }
      graph.setActive(app.view === "graph");
    }
    if (changes.has("data") || changes.has("status")) {
      const count = tabs.querySelector<HTMLElement>("[data-count=suspects]");
      if (count) count.textContent = app.suspects?.length ? String(app.suspects.length) : "";
    }
    if (changes.has("status") || changes.has("selection") || changes.has("data")) {
      const msg = app.error && app.graph ? app.error : app.notice;
      banner.hidden = !msg;
      banner.textContent = msg ?? "";
      banner.classList.toggle("error", !!app.error);
    }
    const n = app.suspects?.length ?? 0;
    document.title = app.snapshotId ? `peeps · #${app.snapshotId}${n ? ` · ${n} suspect${n === 1 ? "" : "s"}` : ""}` : "peeps";
  });

  window.addEventListener("hashchange", () => {
    app.followHash();
    const r = parseHash(location.hash);
    const cur = app.route();
    if (
      r.snapshotId === cur.snapshotId &&
      r.nodeId === cur.nodeId &&
      r.view === cur.view &&
      r.live === cur.live &&
      r.focusDepth === cur.focusDepth
    )
      return;
    void app.applyRoute(r);
  });

  document.addEventListener("keydown", (ev) => {
    const t = ev.target as HTMLElement | null;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const v = VIEWS.find((x) => x.key === ev.key);
    if (v) {
      app.setView(v.name);
      queueMicrotask(() => views[v.name].focus?.());
      ev.preventDefault();
    } else if (ev.key === "[") app.step(-1);
    else if (ev.key === "]") app.step(1);
    else if (ev.key === "/" && app.view === "graph") {
      ev.preventDefault();
      graph.focusSearch();
    } else if (ev.key === "?") {
      help.hidden = !help.hidden;
    } else if (ev.key === "Escape") {
      if (!help.hidden) help.hidden = true;
      else if (app.selected) app.select(null);
      else if (app.focus) app.setFocus(null);
    }
  });

  window.setInterval(tickAll, 500);
  app.startPolling(2000);
  void app.applyRoute(parseHash(location.hash)).then(() => {
    const v = views[app.view];
    v.focus?.();
  });
}

const KEYS: [string, string][] = [
  ["1 … 6", "Suspects, Graph, Requests, Threads, Processes, SQL"],
  ["↑ ↓ j k PgUp PgDn Home End", "move in a table (the inspector follows)"],
  ["Enter", "table: open (graph focus / select) · graph: focus on the selection"],
  ["[ ]", "older / newer snapshot"],
  ["/", "search the graph"],
  ["→ ←  (graph)", "walk the wait-for chain; ↑ ↓ the other branches"],
  ["f + −  (graph)", "fit, zoom"],
  ["Ctrl+Enter  (SQL)", "run the query"],
  ["Esc", "close this, clear the selection, then the focus"],
  ["?", "this help"],
];

function helpPanel(): HTMLElement {
  const panel = h(
    "div",
    { class: "help", hidden: true, attrs: { role: "dialog", "aria-label": "Keyboard shortcuts" } },
    h(
      "div",
      { class: "help-box" },
      h("div", { class: "help-title" }, "Keyboard", h("span", { class: "muted small" }, "  Esc closes")),
      h(
        "dl",
        { class: "kv" },
        KEYS.map(([k, v]) => [h("dt", null, h("kbd", null, k)), h("dd", null, v)]),
      ),
      h(
        "p",
        { class: "muted small" },
        "Deep links: the URL names the snapshot, view and node (#/snapshot/12/node/task:4711:3); reload restores it.",
      ),
    ),
  );
  panel.addEventListener("click", (ev) => {
    if (ev.target === panel) panel.hidden = true;
  });
  return panel;
}

const root = document.getElementById("app");
if (root) boot(root);
