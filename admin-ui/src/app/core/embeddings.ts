/** A vector shown shortened: its first and last values and its dimension. */
export interface VectorSummary {
  index: number;
  dim: number;
  head: number[];
  tail: number[];
  norm: number;
}

export interface EmbeddingsView {
  vectors: VectorSummary[];
  /** Where the vectors were found: `embeddings` or `data[].embedding`. */
  source: string;
  model?: string;
}

function isVector(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
}

export function summarizeVector(v: number[], index: number, keep = 4): VectorSummary {
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  return {
    index,
    dim: v.length,
    head: v.slice(0, keep),
    tail: v.length > keep * 2 ? v.slice(-keep) : v.slice(keep),
    norm,
  };
}

/** Recognizes embeddings in an invoke answer: `{embeddings: [[...]]}` or OpenAI-style `{data: [{embedding}]}`. */
export function findEmbeddings(response: unknown): EmbeddingsView | null {
  if (!response || typeof response !== 'object') return null;
  const r = response as Record<string, unknown>;
  const model = typeof r['model'] === 'string' ? r['model'] : undefined;
  const emb = r['embeddings'];
  if (Array.isArray(emb) && emb.length > 0) {
    if (emb.every(isVector)) return { vectors: emb.map((v, i) => summarizeVector(v, i)), source: 'embeddings', model };
    if (isVector(emb)) return { vectors: [summarizeVector(emb, 0)], source: 'embeddings', model };
  }
  const data = r['data'];
  if (Array.isArray(data) && data.length > 0) {
    const vectors = data.map((d) => (d && typeof d === 'object' ? (d as Record<string, unknown>)['embedding'] : null));
    if (vectors.every(isVector)) {
      return {
        vectors: vectors.map((v, i) => {
          const idx = (data[i] as Record<string, unknown>)['index'];
          return summarizeVector(v, typeof idx === 'number' ? idx : i);
        }),
        source: 'data[].embedding',
        model,
      };
    }
  }
  return null;
}

/** The answer as JSON text, with every long number array shortened to a few values and its length. */
export function compactJson(value: unknown, keep = 4, indent = 2): string {
  const replacer = (_key: string, v: unknown) => {
    if (isVector(v) && v.length > keep * 2 + 1) {
      return `[${v
        .slice(0, keep)
        .map((x) => +x.toFixed(6))
        .join(', ')}, … ${v.length - keep * 2} more …, ${v
        .slice(-keep)
        .map((x) => +x.toFixed(6))
        .join(', ')}] (dim ${v.length})`;
    }
    return v;
  };
  return JSON.stringify(value, replacer, indent) ?? 'null';
}
