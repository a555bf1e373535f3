// Schemas are any JSON (the API's `input_schema`/`output_schema` are typed `unknown`): every
// function here looks before it reads.

type Obj = Record<string, unknown>;

export type FieldKind = 'string' | 'text' | 'number' | 'integer' | 'boolean' | 'enum' | 'string-list' | 'json' | 'tensor';

/** One input of a form generated from a JSON schema property. */
export interface FormField {
  name: string;
  kind: FieldKind;
  required: boolean;
  description?: string;
  options?: unknown[];
  minimum?: number;
  maximum?: number;
  default?: unknown;
  /** Where the value goes in the payload when not at `name` (a tensor: `['inputs', 'X']`). */
  path?: string[];
  /** A tensor's element type and shape (numbers fixed, names dynamic), from `x-dtype`/`x-shape`. */
  dtype?: string;
  shape?: (number | string)[];
}

function asObj(s: unknown): Obj | null {
  return s && typeof s === 'object' && !Array.isArray(s) ? (s as Obj) : null;
}

function typeOf(schema: Obj): string | undefined {
  const t = schema['type'];
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return t.find((x) => x !== 'null') as string | undefined;
  return undefined;
}

function isStringOrStrings(s: unknown): boolean {
  const o = asObj(s);
  if (!o) return false;
  const t = typeOf(o);
  if (t === 'string' && !Array.isArray(o['enum'])) return true;
  const items = asObj(o['items']);
  return t === 'array' && !!items && typeOf(items) === 'string';
}

function fieldKind(schema: Obj): FieldKind {
  if (Array.isArray(schema['enum'])) return 'enum';
  // "a text or a list of texts" (oneOf string | array of strings): a list editor, sent as an array.
  for (const k of ['oneOf', 'anyOf']) {
    const alts = schema[k];
    if (Array.isArray(alts) && alts.length && alts.every(isStringOrStrings) && alts.some((a) => typeOf(asObj(a)!) === 'array')) {
      return 'string-list';
    }
  }
  const t = typeOf(schema);
  switch (t) {
    case 'string':
      return typeof schema['maxLength'] === 'number' && (schema['maxLength'] as number) <= 200 ? 'string' : 'text';
    case 'integer':
      return 'integer';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array': {
      const items = asObj(schema['items']);
      return items && typeOf(items) === 'string' ? 'string-list' : 'json';
    }
    default:
      return 'json';
  }
}

/**
 * The form fields for an input schema, or null when no form fits (not an object with properties,
 * or a `oneOf`/`anyOf` root): the playground then offers raw JSON only.
 */
export function formFields(schema: unknown): FormField[] | null {
  const root = asObj(schema);
  if (!root || (typeOf(root) !== 'object' && !root['properties'])) return null;
  const props = asObj(root['properties']);
  if (!props || Object.keys(props).length === 0) return null;
  const required = new Set(Array.isArray(root['required']) ? (root['required'] as string[]) : []);
  return Object.entries(props).flatMap(([name, raw]): FormField[] => {
    const s = asObj(raw) ?? {};
    const tensors = tensorFields(name, s);
    if (tensors) return tensors;
    return [{
      name,
      kind: fieldKind(s),
      required: required.has(name),
      description: typeof s['description'] === 'string' ? (s['description'] as string) : undefined,
      options: Array.isArray(s['enum']) ? (s['enum'] as unknown[]) : undefined,
      minimum: typeof s['minimum'] === 'number' ? (s['minimum'] as number) : undefined,
      maximum: typeof s['maximum'] === 'number' ? (s['maximum'] as number) : undefined,
      default: s['default'],
    }];
  });
}

/**
 * An object whose every property declares `x-dtype` and `x-shape` (brainml's named input tensors,
 * derived from the model): one tensor field per property, its value a list of numbers.
 */
function tensorFields(parent: string, schema: Obj): FormField[] | null {
  const props = asObj(schema['properties']);
  if (!props || Object.keys(props).length === 0) return null;
  const entries = Object.entries(props).map(([name, raw]) => [name, asObj(raw) ?? {}] as const);
  if (!entries.every(([, t]) => typeof t['x-dtype'] === 'string' && Array.isArray(t['x-shape']))) return null;
  const required = new Set(Array.isArray(schema['required']) ? (schema['required'] as string[]) : []);
  return entries.map(([name, t]) => ({
    name: `${parent}.${name}`,
    kind: 'tensor',
    required: required.has(name),
    // The description repeats dtype and shape, which the tensor's own hint shows.
    path: [parent, name],
    dtype: t['x-dtype'] as string,
    shape: t['x-shape'] as (number | string)[],
  }));
}

/**
 * A tensor typed as numbers (spaces, commas, brackets or new lines between them), row-major, as
 * `{shape, data}`: fixed dimensions from the schema, the one dynamic dimension from the count.
 */
function tensorValue(f: FormField, text: string): { shape: number[]; data: (number | boolean)[] } {
  const tokens = text.split(/[\s,;[\]]+/).filter((t) => t.length > 0);
  const isBool = f.dtype === 'bool';
  const isInt = !isBool && !!f.dtype && /int/.test(f.dtype);
  const data = tokens.map((t) => {
    if (isBool) {
      if (t === 'true' || t === '1') return true;
      if (t === 'false' || t === '0') return false;
      throw new Error(`${f.name}: "${t}" is not a boolean`);
    }
    const n = Number(t);
    if (!Number.isFinite(n)) throw new Error(`${f.name}: "${t}" is not a number`);
    if (isInt && !Number.isInteger(n)) throw new Error(`${f.name}: ${t} is not an integer (${f.dtype})`);
    return n;
  });
  const shape = f.shape ?? [data.length];
  const fixed = shape.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  const dynamic = shape.filter((d) => typeof d !== 'number').length;
  if (dynamic > 1) throw new Error(`${f.name} has ${dynamic} dynamic dimensions: give its shape in raw JSON`);
  const rest = fixed === 0 ? 0 : data.length / fixed;
  if (dynamic === 0 ? data.length !== fixed : !Number.isInteger(rest) || rest < 1) {
    throw new Error(`${f.name}: ${data.length} values do not fill [${shape.join(', ')}] (a multiple of ${fixed} needed)`);
  }
  return { shape: shape.map((d) => (typeof d === 'number' ? d : rest)), data };
}

/** The tensor's values as text, one row (the first dimension) per line. */
function tensorText(f: FormField, v: unknown): string {
  const o = asObj(v);
  const flat = (x: unknown): unknown[] => (Array.isArray(x) ? x.flatMap(flat) : [x]);
  const data = o && Array.isArray(o['data']) ? (o['data'] as unknown[]) : flat(v);
  const shape = o && Array.isArray(o['shape']) ? (o['shape'] as number[]) : f.shape;
  const row = (shape ?? []).slice(1).reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  const lines: string[] = [];
  for (let i = 0; i < data.length; i += Math.max(row, 1)) lines.push(data.slice(i, i + Math.max(row, 1)).map(String).join(' '));
  return lines.join('\n');
}

function setAt(out: Record<string, unknown>, path: string[], value: unknown) {
  let o = out;
  for (const key of path.slice(0, -1)) o = (asObj(o[key]) ?? (o[key] = {})) as Record<string, unknown>;
  o[path[path.length - 1]] = value;
}

function getAt(p: Obj, path: string[]): unknown {
  let v: unknown = p;
  for (const key of path) v = asObj(v)?.[key];
  return v;
}

/**
 * Form values are strings (booleans for checkboxes, string arrays for lists); turns them into a
 * payload. Throws on bad input.
 */
export function buildPayload(fields: FormField[], values: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const v = values[f.name];
    if (f.kind === 'boolean') {
      if (v !== undefined && v !== '' && v !== null) out[f.name] = v === true || v === 'true';
      continue;
    }
    if (f.kind === 'string-list' && Array.isArray(v)) {
      const items = v.map(String).filter((x) => x.trim().length > 0);
      if (items.length) out[f.name] = items;
      else if (f.required) throw new Error(`${f.name} is required`);
      continue;
    }
    const text = v === undefined || v === null ? '' : String(v);
    if (text.trim() === '') {
      if (f.required) throw new Error(`${f.name} is required`);
      continue;
    }
    switch (f.kind) {
      case 'tensor':
        setAt(out, f.path ?? [f.name], tensorValue(f, text));
        break;
      case 'integer':
      case 'number': {
        const n = Number(text);
        if (!Number.isFinite(n)) throw new Error(`${f.name} must be a number`);
        if (f.kind === 'integer' && !Number.isInteger(n)) throw new Error(`${f.name} must be an integer`);
        out[f.name] = n;
        break;
      }
      case 'enum': {
        const match = f.options?.find((o) => String(o) === text);
        out[f.name] = match === undefined ? text : match;
        break;
      }
      case 'string-list':
        out[f.name] = text
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l.length > 0);
        break;
      case 'json':
        try {
          out[f.name] = JSON.parse(text);
        } catch {
          throw new Error(`${f.name} is not valid JSON`);
        }
        break;
      default:
        out[f.name] = text;
    }
  }
  return out;
}

/**
 * The form values for a payload (the way back from raw JSON to the form). `unknown` names the
 * properties no field shows; a payload that is not an object gives null.
 */
export function formValues(fields: FormField[], payload: unknown): { values: Record<string, unknown>; unknown: string[] } | null {
  const p = asObj(payload);
  if (!p) return null;
  const values: Record<string, unknown> = {};
  const known = new Set(fields.map((f) => (f.path ? f.path[0] : f.name)));
  const unknown = Object.keys(p).filter((k) => !known.has(k));
  for (const f of fields) {
    const v = f.path ? getAt(p, f.path) : p[f.name];
    if (v === undefined) continue;
    switch (f.kind) {
      case 'tensor':
        values[f.name] = tensorText(f, v);
        break;
      case 'boolean':
        values[f.name] = v === true;
        break;
      case 'string-list':
        values[f.name] = Array.isArray(v) ? v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))) : [typeof v === 'string' ? v : JSON.stringify(v)];
        break;
      case 'json':
        values[f.name] = JSON.stringify(v);
        break;
      default:
        values[f.name] = typeof v === 'string' ? v : JSON.stringify(v);
    }
  }
  return { values, unknown };
}

/** A one-line description of a schema's type, e.g. `integer (0 … 600000)` or `"a" | "b"`. */
export function describeType(schema: unknown): string {
  if (schema === true || schema === undefined) return 'any';
  if (schema === false) return 'nothing';
  const s = asObj(schema);
  if (!s) return 'any';
  if (Array.isArray(s['enum'])) return (s['enum'] as unknown[]).map((e) => JSON.stringify(e)).join(' | ');
  if ('const' in s) return `= ${JSON.stringify(s['const'])}`;
  for (const k of ['oneOf', 'anyOf']) {
    if (Array.isArray(s[k])) return (s[k] as unknown[]).map(describeType).join(k === 'oneOf' ? ' ⊕ ' : ' | ');
  }
  const t = s['type'];
  let base = Array.isArray(t) ? t.join(' | ') : typeof t === 'string' ? t : s['properties'] ? 'object' : 'any';
  if (base === 'array' && s['items'] !== undefined) base = `array of ${describeType(s['items'])}`;
  const bounds: string[] = [];
  const lo = s['minimum'] ?? s['minLength'] ?? s['minItems'];
  const hi = s['maximum'] ?? s['maxLength'] ?? s['maxItems'];
  if (lo !== undefined || hi !== undefined) bounds.push(`${lo ?? ''} … ${hi ?? ''}`.trim());
  if (typeof s['format'] === 'string') bounds.push(`format ${s['format']}`);
  return bounds.length ? `${base} (${bounds.join(', ')})` : base;
}

export interface SchemaRow {
  path: string;
  depth: number;
  type: string;
  required: boolean;
  description?: string;
}

/** Flattens a schema's properties (nested objects and array items too) into rows for a table. */
export function schemaRows(schema: unknown, maxDepth = 4): SchemaRow[] {
  const rows: SchemaRow[] = [];
  const walk = (s: unknown, prefix: string, depth: number) => {
    const o = asObj(s);
    if (!o || depth > maxDepth) return;
    const props = asObj(o['properties']);
    const required = new Set(Array.isArray(o['required']) ? (o['required'] as string[]) : []);
    if (props) {
      for (const [name, child] of Object.entries(props)) {
        const path = prefix ? `${prefix}.${name}` : name;
        const c = asObj(child);
        rows.push({
          path,
          depth,
          type: describeType(child),
          required: required.has(name),
          description: c && typeof c['description'] === 'string' ? (c['description'] as string) : undefined,
        });
        walk(child, path, depth + 1);
      }
    }
    const items = asObj(o['items']);
    if (items && asObj(items['properties'])) walk(items, `${prefix}[]`, depth);
  };
  walk(schema, '', 0);
  return rows;
}

/** Extra facts of the root of a schema worth showing: additionalProperties, etc. */
export function schemaNotes(schema: unknown): string[] {
  const o = asObj(schema);
  if (schema === true) return ['Accepts any JSON value.'];
  if (!o) return [];
  const notes: string[] = [];
  if (o['additionalProperties'] === false) notes.push('No other properties allowed.');
  if (typeOf(o) === 'object' && !o['properties']) notes.push('Any JSON object.');
  return notes;
}

/** An example payload satisfying the required fields, as a start for the raw JSON editor. */
export function examplePayload(schema: unknown): unknown {
  const o = asObj(schema);
  if (!o) return {};
  if (o['default'] !== undefined) return o['default'];
  if (Array.isArray(o['examples']) && o['examples'].length) return o['examples'][0];
  if (Array.isArray(o['enum'])) return o['enum'][0];
  switch (typeOf(o) ?? (o['properties'] ? 'object' : undefined)) {
    case 'object': {
      const props = asObj(o['properties']) ?? {};
      const required = Array.isArray(o['required']) ? (o['required'] as string[]) : [];
      const out: Record<string, unknown> = {};
      for (const name of required) out[name] = examplePayload(props[name] ?? true);
      return out;
    }
    case 'array':
      return [];
    case 'string':
      return '';
    case 'integer':
    case 'number':
      return typeof o['minimum'] === 'number' ? o['minimum'] : 0;
    case 'boolean':
      return false;
    default:
      return {};
  }
}
