// Tiny DOM helpers: the UI is vanilla TypeScript, so element creation goes
// through `h` to stay short and typed.

export type Child = Node | string | number | null | undefined | false | Child[];

export interface Props {
  class?: string | undefined;
  style?: string | undefined;
  title?: string | undefined;
  id?: string | undefined;
  dataset?: Record<string, string> | undefined;
  attrs?: Record<string, string> | undefined;
  onclick?: ((ev: MouseEvent) => void) | undefined;
  ondblclick?: ((ev: MouseEvent) => void) | undefined;
  oninput?: ((ev: Event) => void) | undefined;
  onchange?: ((ev: Event) => void) | undefined;
  onkeydown?: ((ev: KeyboardEvent) => void) | undefined;
  [key: string]: unknown;
}

const HANDLERS = new Set(["onclick", "ondblclick", "oninput", "onchange", "onkeydown"]);

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "class") el.className = String(value);
      else if (key === "style") el.setAttribute("style", String(value));
      else if (key === "dataset") Object.assign(el.dataset, value as Record<string, string>);
      else if (key === "attrs") {
        for (const [a, v] of Object.entries(value as Record<string, string>)) el.setAttribute(a, v);
      } else if (HANDLERS.has(key)) {
        el.addEventListener(key.slice(2), value as EventListener);
      } else if (key in el) {
        (el as unknown as Record<string, unknown>)[key] = value;
      } else {
        el.setAttribute(key, String(value));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(parent: Element | DocumentFragment, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (typeof child === "string" || typeof child === "number") {
      parent.appendChild(document.createTextNode(String(child)));
    } else parent.appendChild(child);
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function replace(el: Element, ...children: Child[]): void {
  clear(el);
  append(el, children);
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escape text for innerHTML/SVG string building (used by the graph renderer). */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}
