// Images in the playground: which input property takes a file, what a face detector answered,
// and where its boxes go over the image as shown.
//
// A capability declares a file input with JSON Schema's content keywords (the gateway reads the
// same ones, gateway/src/invoke/binary.rs): `{"type": "string", "contentEncoding": "base64",
// "contentMediaType": "image/*"}`. The playground sends the file itself as multipart/form-data.

type Obj = Record<string, unknown>;

function asObj(s: unknown): Obj | null {
  return s && typeof s === 'object' && !Array.isArray(s) ? (s as Obj) : null;
}

/** The input property that takes an image as base64, and the media types it declares. */
export interface ImageInput {
  name: string;
  /** The declared `contentMediaType` (`image/*`, `image/png`, `*\/*`), for the picker's `accept`. */
  accept: string;
}

/** The property of an input schema that takes an image (base64, `contentMediaType` covering `image/…`), if any. */
export function imageInput(schema: unknown): ImageInput | null {
  const props = asObj(asObj(schema)?.['properties']);
  if (!props) return null;
  for (const [name, raw] of Object.entries(props)) {
    const p = asObj(raw);
    const media = p?.['contentMediaType'];
    if (p?.['contentEncoding'] !== 'base64' || typeof media !== 'string') continue;
    const m = media.trim().toLowerCase();
    if (m.startsWith('image/') || m === '*/*') return { name, accept: m === '*/*' ? 'image/*' : m };
  }
  return null;
}

/** Whether a file's type is one `accept` (`image/*` or an exact type) covers. */
export function accepts(accept: string, type: string): boolean {
  const a = accept.toLowerCase();
  const t = type.toLowerCase();
  if (!t) return false;
  return a === t || (a.endsWith('/*') && t.startsWith(a.slice(0, -1)));
}

/** One detected face: its box in the image's pixels and its score. */
export interface Face {
  x: number;
  y: number;
  width: number;
  height: number;
  score: number;
}

/** A face detector's answer: `{faces: [{x, y, width, height, score}], width, height}`. */
export interface Detections {
  faces: Face[];
  width: number;
  height: number;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** The detections in a response, or null when it is not that shape (any other capability's answer). */
export function detections(response: unknown): Detections | null {
  const r = asObj(response);
  if (!r || !Array.isArray(r['faces']) || !isNum(r['width']) || !isNum(r['height']) || r['width'] <= 0 || r['height'] <= 0) return null;
  const faces: Face[] = [];
  for (const f of r['faces']) {
    const o = asObj(f);
    if (!o || !['x', 'y', 'width', 'height', 'score'].every((k) => isNum(o[k]))) return null;
    faces.push({ x: o['x'] as number, y: o['y'] as number, width: o['width'] as number, height: o['height'] as number, score: o['score'] as number });
  }
  return { faces, width: r['width'], height: r['height'] };
}

/** A box placed over the image as shown, in percent of its size, so it follows any displayed size. */
export interface Placed {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Where a face's box goes, in percent of the image, clipped to it (a box may start outside the image). */
export function place(face: Face, width: number, height: number): Placed {
  const clip = (v: number, max: number) => Math.min(Math.max(v, 0), max);
  const x0 = clip(face.x, width);
  const y0 = clip(face.y, height);
  const x1 = clip(face.x + face.width, width);
  const y1 = clip(face.y + face.height, height);
  return { left: (x0 / width) * 100, top: (y0 / height) * 100, width: ((x1 - x0) / width) * 100, height: ((y1 - y0) / height) * 100 };
}

/**
 * The form fields of a multipart invoke: the payload's options as text (the gateway converts them to
 * the types the schema declares). Empty values are left out; objects and arrays go as JSON.
 */
export function formOptions(payload: Record<string, unknown>, skip: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(payload)) {
    if (k === skip || v === undefined || v === null || v === '') continue;
    out.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  }
  return out;
}
