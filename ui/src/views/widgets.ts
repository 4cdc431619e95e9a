// Small building blocks shared by the views.

import type { App } from "../app";
import { type Child, h } from "../dom";
import { fmtDuration, fmtTicking, nowNs, parseFrame } from "../format";
import { kindStyle } from "../kinds";
import type { GNode } from "../model";
import { subtitle } from "../summary";

/** A clickable reference to a node: glyph, label, optional summary. */
export function nodeChip(app: App, id: string, opts: { summary?: boolean } = {}): HTMLElement {
  const n: GNode | undefined = app.graph?.nodes.get(id);
  const kind = n?.kind ?? id.split(":")[0] ?? "?";
  const st = kindStyle(kind);
  const sub = n && opts.summary ? subtitle(n.kind, n.attrs) : "";
  return h(
    "a",
    {
      class: `chip${n?.ghost || !n ? " ghost" : ""}`,
      href: "#",
      title: `${n?.label ?? id}\n${id}${n ? ` (${n.proc_key})` : " — not in this snapshot"}`,
      dataset: { node: id },
      onclick: (ev: MouseEvent) => {
        ev.preventDefault();
        ev.stopPropagation();
        app.select(id);
      },
    },
    h("span", { class: "glyph", style: `--kc:${st.color}` }, st.glyph),
    h("span", { class: "chip-label" }, n?.label ?? id),
    sub ? h("span", { class: "chip-sub" }, sub) : null,
  );
}

/**
 * A duration that keeps growing: `baseNs` was measured at capture time
 * `capturedAtNs`; now it is `baseNs + (now - capturedAtNs)`.
 */
export function tickSpan(baseNs: number, capturedAtNs: number | null): HTMLElement {
  if (capturedAtNs === null) return h("span", { class: "dur" }, fmtDuration(baseNs));
  const el = h("span", {
    class: "dur tick",
    dataset: { base: String(baseNs), cap: String(capturedAtNs) },
    title: `${fmtDuration(baseNs)} at capture; ticking since (if it is still waiting)`,
  });
  updateTick(el);
  return el;
}

function updateTick(el: HTMLElement): void {
  const base = Number(el.dataset["base"]);
  const cap = Number(el.dataset["cap"]);
  const since = Math.max(0, nowNs() - cap);
  el.textContent = fmtTicking(base + since);
}

/** Ticking durations refreshed per timer tick, at most (a long table's tail stays put). */
const MAX_TICKS = 300;

/** Called by a timer: refresh the ticking durations and ages that are on screen. */
export function tickAll(): void {
  for (const el of document.querySelectorAll<HTMLElement>(".inspector .tick")) updateTick(el);
  const inView = document.querySelectorAll<HTMLElement>(".view:not([hidden]) .tick");
  for (let i = 0; i < inView.length && i < MAX_TICKS; i++) updateTick(inView[i] as HTMLElement);
  for (const el of document.querySelectorAll<HTMLElement>(".tick-age")) {
    const at = Number(el.dataset["at"]);
    const age = Math.max(0, nowNs() - at);
    el.textContent = age < 1e9 ? "just now" : `${fmtTicking(age).replace(/\.\d+s$/, "s")} ago`;
  }
}

/** Text with line-break opportunities after each `/`, so paths wrap between parts. */
function breakable(path: string): Child[] {
  const out: Child[] = [];
  const parts = path.split("/");
  parts.forEach((p, i) => {
    out.push(i < parts.length - 1 ? `${p}/` : p);
    if (i < parts.length - 1) out.push(h("wbr"));
  });
  return out;
}

/** A `path:line` source location, monospace, with the function name muted. */
export function frameEl(frame: string, cls = ""): HTMLElement {
  const { where, func } = parseFrame(frame);
  return h(
    "div",
    {
      class: `frame ${cls}`,
      title: `${frame}\n(click to copy ${where})`,
      // path:line is what an editor's "go to file" wants.
      onclick: (ev: MouseEvent) => {
        ev.stopPropagation();
        const el = ev.currentTarget as HTMLElement;
        void navigator.clipboard?.writeText(where).then(
          () => {
            el.classList.add("copied");
            window.setTimeout(() => el.classList.remove("copied"), 900);
          },
          () => undefined,
        );
      },
    },
    h("span", { class: "loc" }, breakable(where)),
    func ? h("span", { class: "func" }, ` in ${func}`) : null,
  );
}

export function kv(rows: [string, Child][]): HTMLElement {
  return h(
    "dl",
    { class: "kv" },
    rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
  );
}

export function emptyState(app: App): HTMLElement {
  if (app.loading) return h("div", { class: "empty-state" }, h("span", { class: "spinner" }), " Loading snapshot…");
  if (app.error)
    return h("div", { class: "empty-state error" }, h("div", { class: "big" }, "Can't show this snapshot"), h("pre", null, app.error));
  if (app.snapshots.length === 0)
    return h(
      "div",
      { class: "empty-state" },
      h("div", { class: "big" }, "No snapshots yet"),
      h(
        "p",
        null,
        "Start an instrumented process with ",
        h("code", null, "PEEPS_DASHBOARD=<ingest host:port>"),
        ", then press ",
        h("b", null, "Jump now"),
        " (or wait for the periodic snapshot).",
      ),
      h("p", { class: "muted" }, `${app.connected.length} process(es) connected now.`),
    );
  return h("div", { class: "empty-state" }, "Pick a snapshot on the timeline.");
}
