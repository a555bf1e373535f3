import { buildPayload, describeType, examplePayload, formFields, formValues, schemaRows } from './schema';

const sleep = {
  type: 'object',
  required: ['ms'],
  additionalProperties: false,
  properties: { ms: { type: 'integer', minimum: 0, maximum: 600000 } },
};
const fail = {
  type: 'object',
  properties: { kind: { enum: ['failed', 'invalid_input'] }, message: { type: 'string' }, texts: { type: 'array', items: { type: 'string' } }, opts: { type: 'object' }, on: { type: 'boolean' } },
};

describe('schema forms', () => {
  it('makes fields from object properties', () => {
    const fields = formFields(sleep)!;
    expect(fields).toEqual([{ name: 'ms', kind: 'integer', required: true, description: undefined, options: undefined, minimum: 0, maximum: 600000, default: undefined }]);
    expect(formFields(fail)!.map((f) => f.kind)).toEqual(['enum', 'text', 'string-list', 'json', 'boolean']);
  });

  it('offers no form for schemas without properties', () => {
    expect(formFields(true)).toBeNull();
    expect(formFields({ type: 'object' })).toBeNull();
    expect(formFields({ type: 'string' })).toBeNull();
  });

  it('builds typed payloads and rejects bad input', () => {
    const fields = formFields(fail)!;
    expect(buildPayload(fields, { kind: 'failed', message: 'boom', texts: 'a\n\n b ', opts: '{"x":1}', on: true })).toEqual({
      kind: 'failed',
      message: 'boom',
      texts: ['a', 'b'],
      opts: { x: 1 },
      on: true,
    });
    expect(buildPayload(fields, {})).toEqual({});
    expect(() => buildPayload(fields, { opts: '{nope' })).toThrow(/opts is not valid JSON/);
    const ms = formFields(sleep)!;
    expect(buildPayload(ms, { ms: '250' })).toEqual({ ms: 250 });
    expect(() => buildPayload(ms, {})).toThrow(/ms is required/);
    expect(() => buildPayload(ms, { ms: '1.5' })).toThrow(/integer/);
  });

  it('describes types readably', () => {
    expect(describeType(sleep.properties.ms)).toBe('integer (0 … 600000)');
    expect(describeType(fail.properties.kind)).toBe('"failed" | "invalid_input"');
    expect(describeType({ type: 'array', items: { type: 'number' } })).toBe('array of number');
    expect(describeType(true)).toBe('any');
  });

  it('flattens nested properties into rows', () => {
    const rows = schemaRows({
      type: 'object',
      required: ['data'],
      properties: { data: { type: 'array', items: { type: 'object', properties: { embedding: { type: 'array', items: { type: 'number' } } } } } },
    });
    expect(rows.map((r) => [r.path, r.required, r.depth])).toEqual([
      ['data', true, 0],
      ['data[].embedding', false, 1],
    ]);
  });

  it('proposes an example with the required fields', () => {
    expect(examplePayload(sleep)).toEqual({ ms: 0 });
    expect(examplePayload(true)).toEqual({});
  });

  it('makes "a text or a list of texts" a list editor, and maps payloads back to form values', () => {
    const schema = {
      type: 'object',
      required: ['input'],
      properties: {
        input: { oneOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string' } }] },
        model: { type: 'string' },
        encoding_format: { enum: ['float', 'base64'] },
        normalize: { type: 'boolean' },
      },
    };
    const fields = formFields(schema)!;
    expect(fields.map((f) => f.kind)).toEqual(['string-list', 'text', 'enum', 'boolean']);
    const back = formValues(fields, { input: 'one', model: 'm', encoding_format: 'float', normalize: true, x: 1 })!;
    expect(back.values).toEqual({ input: ['one'], model: 'm', encoding_format: 'float', normalize: true });
    expect(back.unknown).toEqual(['x']);
    expect(buildPayload(fields, back.values)).toEqual({ input: ['one'], model: 'm', encoding_format: 'float', normalize: true });
    expect(formValues(fields, [1])).toBeNull();
  });

  // brainml's predict schema, as the plugin derives it from the iris forest and the CNN.
  const tensor = (name: string, dtype: string, shape: (number | string)[]) => ({
    description: `${name}: ${dtype} [${shape.join(', ')}]`,
    'x-dtype': dtype,
    'x-shape': shape,
    oneOf: [{ type: 'object', required: ['shape', 'data'] }, { type: 'array' }],
  });
  const predict = {
    type: 'object',
    required: ['inputs'],
    additionalProperties: false,
    properties: {
      inputs: {
        type: 'object',
        required: ['X'],
        additionalProperties: false,
        properties: { X: tensor('X', 'float32', ['N', 4]), mask: tensor('mask', 'int64', [2]) },
      },
      outputs: { type: 'array', items: { enum: ['label', 'probabilities'] }, uniqueItems: true },
    },
  };

  it("makes each of a model's input tensors a field and sends {shape, data}, the dynamic dimension from the count", () => {
    const fields = formFields(predict)!;
    expect(fields.map((f) => [f.name, f.kind, f.required])).toEqual([
      ['inputs.X', 'tensor', true],
      ['inputs.mask', 'tensor', false],
      ['outputs', 'json', false],
    ]);
    expect(fields[0]).toMatchObject({ dtype: 'float32', shape: ['N', 4], path: ['inputs', 'X'] });
    expect(buildPayload(fields, { 'inputs.X': '5.1 3.5 1.4 0.2\n6.7, 3.0, 5.2, 2.3', 'inputs.mask': '[1, 0]' })).toEqual({
      inputs: { X: { shape: [2, 4], data: [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3] }, mask: { shape: [2], data: [1, 0] } },
    });
    expect(() => buildPayload(fields, { 'inputs.X': '1 2 3' })).toThrow('3 values do not fill [N, 4] (a multiple of 4 needed)');
    expect(() => buildPayload(fields, { 'inputs.X': '1 2 3 4', 'inputs.mask': '1 0.5' })).toThrow('0.5 is not an integer (int64)');
    expect(() => buildPayload(fields, { 'inputs.X': '1 2 x 4' })).toThrow('"x" is not a number');
    expect(() => buildPayload(fields, { 'inputs.mask': '1 0' })).toThrow('inputs.X is required');
  });

  it('maps a tensor payload back to rows, from {shape, data} or nested arrays', () => {
    const fields = formFields(predict)!;
    const flat = formValues(fields, { inputs: { X: { shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] } }, outputs: ['label'] })!;
    expect(flat.values).toEqual({ 'inputs.X': '1 2 3 4\n5 6 7 8', outputs: '["label"]' });
    expect(flat.unknown).toEqual([]);
    const nested = formValues(fields, { inputs: { X: [[1, 2, 3, 4]] }, extra: 1 })!;
    expect(nested.values).toEqual({ 'inputs.X': '1 2 3 4' });
    expect(nested.unknown).toEqual(['extra']);
    expect(buildPayload(fields, flat.values)).toEqual({ inputs: { X: { shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] } }, outputs: ['label'] });
  });
});
