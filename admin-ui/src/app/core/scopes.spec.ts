import { canInvoke, canInvokeSomething, canRead, isAdmin } from './scopes';

describe('scopes', () => {
  it('read and admin may read; invoke alone may not', () => {
    expect(canRead(['read'])).toBe(true);
    expect(canRead(['admin'])).toBe(true);
    expect(canRead(['invoke'])).toBe(false);
  });

  it('only admin is admin', () => {
    expect(isAdmin(['read', 'invoke'])).toBe(false);
    expect(isAdmin(['admin'])).toBe(true);
  });

  it('narrowed invoke scopes', () => {
    expect(canInvoke(['invoke'], 'echo', 'echo')).toBe(true);
    expect(canInvoke(['invoke:echo'], 'echo', 'sleep')).toBe(true);
    expect(canInvoke(['invoke:echo'], 'candle')).toBe(false);
    expect(canInvoke(['invoke:candle/model.infer'], 'candle', 'model.infer')).toBe(true);
    expect(canInvoke(['invoke:candle/model.infer'], 'candle', 'other')).toBe(false);
    expect(canInvoke(['invoke:candle/model.infer'], 'candle')).toBe(true);
    expect(canInvoke(['read'], 'echo')).toBe(false);
    expect(canInvoke(['admin'], 'echo', 'x')).toBe(true);
    expect(canInvokeSomething(['read'])).toBe(false);
    expect(canInvokeSomething(['read', 'invoke:echo'])).toBe(true);
  });
});
