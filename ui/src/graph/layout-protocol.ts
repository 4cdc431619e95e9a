// Messages between the graph view and its layout worker.

export interface LayoutNodeIn {
  id: string;
  width: number;
  height: number;
}

export interface LayoutEdgeIn {
  id: string;
  src: string;
  dst: string;
  kind: string;
  /** Lay out dst → src (holds edges: resource before holder). */
  reversed: boolean;
}

export interface LayoutRequest {
  seq: number;
  nodes: LayoutNodeIn[];
  edges: LayoutEdgeIn[];
  /** Width / height the packed components aim for. */
  aspect: number;
}

export interface LayoutResponse {
  seq: number;
  /** [id, x, y, w, h] — top-left corner. */
  nodes: [string, number, number, number, number][];
  /** [id, flat x,y list from the edge's src to its dst, joins two islands]. */
  edges: [string, number[], boolean][];
  width: number;
  height: number;
  ms: number;
  components: number;
  error?: string;
  /** Set on interim progress messages (0..1); the final answer has none. */
  progress?: number;
}
