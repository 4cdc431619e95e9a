// The UI's only way to the server: the public HTTP API (docs/architecture.md).
// Every URL is relative so the UI works behind a path prefix.

import type {
  EventsAnswer,
  GraphAnswer,
  HealthAnswer,
  JumpNowAnswer,
  ProcessesAnswer,
  SnapshotAnswer,
  SnapshotProgressAnswer,
  SnapshotsAnswer,
  SqlAnswer,
  SqlRequest,
  SuspectsAnswer,
} from "./types";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch(path, { ...init, headers: { Accept: "application/json", ...init?.headers } });
  } catch (err) {
    throw new ApiError(0, `server unreachable (${String(err)})`);
  }
  const text = await resp.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    if (!resp.ok) throw new ApiError(resp.status, text.slice(0, 500) || resp.statusText);
    throw new ApiError(resp.status, `invalid JSON from ${path}`);
  }
  if (!resp.ok) {
    const e = (body as { error?: { message?: string } } | null)?.error;
    throw new ApiError(resp.status, e?.message ?? `${resp.status} ${resp.statusText}`);
  }
  return body as T;
}

function post<T>(path: string, payload: unknown): Promise<T> {
  return call<T>(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

export const api = {
  health: () => call<HealthAnswer>("health"),
  processes: () => call<ProcessesAnswer>("api/processes"),
  jumpNow: () => post<JumpNowAnswer>("api/jump-now", {}),
  progress: () => call<SnapshotProgressAnswer>("api/snapshot-progress"),
  snapshots: (limit = 200) => call<SnapshotsAnswer>(`api/snapshots?limit=${limit}`),
  snapshot: (id: number) => call<SnapshotAnswer>(`api/snapshots/${id}`),
  graph: (id: number) => call<GraphAnswer>(`api/snapshots/${id}/graph`),
  suspects: (id: number) => call<SuspectsAnswer>(`api/snapshots/${id}/suspects`),
  events: (id: number, entityId: string) =>
    call<EventsAnswer>(`api/snapshots/${id}/events?entity_id=${encodeURIComponent(entityId)}`),
  sql: (req: SqlRequest) => post<SqlAnswer>("api/sql", req),
};
