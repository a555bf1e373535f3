import { validateConfig } from './config-editor';
import { mergeLines } from './log-tail';

describe('validateConfig', () => {
  it('accepts objects only', () => {
    expect(validateConfig('{"a": 1}')).toEqual({ value: { a: 1 } });
    expect(validateConfig('[1]').error).toMatch(/JSON object/);
    expect(validateConfig('null').error).toMatch(/JSON object/);
    expect(validateConfig('{a:').error).toMatch(/Not valid JSON/);
  });
});

describe('mergeLines', () => {
  const l = (n: number) => ({ ts: `t${n}`, stream: 'stdout', message: `m${n}` });
  it('appends new lines once, keeping the last N', () => {
    let lines = mergeLines([], [l(1), l(2)]);
    lines = mergeLines(lines, [l(2), l(3)]);
    expect(lines.map((x) => x.message)).toEqual(['m1', 'm2', 'm3']);
    expect(mergeLines(lines, [l(4), l(5)], 3).map((x) => x.message)).toEqual(['m3', 'm4', 'm5']);
  });
});
