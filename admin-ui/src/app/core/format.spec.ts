import { formatAgo, formatMs, formatRate, formatShare } from './format';
import { fromGateway, mergeHistory } from './plugins.store';

describe('format', () => {
  it('says how long ago in words', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(formatAgo('2026-01-01T11:59:58Z', now)).toBe('just now');
    expect(formatAgo('2026-01-01T11:59:30Z', now)).toBe('30 s ago');
    expect(formatAgo('2026-01-01T11:57:00Z', now)).toBe('3 min ago');
    expect(formatAgo('2026-01-01T09:00:00Z', now)).toBe('3 h ago');
    expect(formatAgo('not a time', now)).toBe('not a time');
  });

  it('keeps rates, latencies and shares readable', () => {
    expect(formatRate(0)).toBe('0 req/s');
    expect(formatRate(0.05)).toBe('3.0 req/min');
    expect(formatRate(250)).toBe('250 req/s');
    expect(formatMs(0.25)).toBe('250 µs');
    expect(formatMs(1500)).toBe('1.50 s');
    expect(formatMs(null)).toBe('—');
    expect(formatShare(0)).toBe('0%');
    expect(formatShare(0.015)).toBe('1.50%');
  });
});

describe('gateway history in the charts', () => {
  const gw = (time_ms: number) =>
    fromGateway({
      time_ms, cpu_percent: 1, memory_mb: 2, replicas: 1, requests: 5, errors: 1,
      request_rate: 4, error_rate: 0.25, p50_ms: 1, p99_ms: 9, runtime_requests: 5, runtime_errors: 1,
    });

  it('turns a sample into a chart point (errors per second from the share)', () => {
    expect(gw(1000)).toMatchObject({ t: 1000, rps: 4, eps: 1, p99: 9, requests: 5 });
  });

  it('puts the live points after the gateway history, dropping those it already covers', () => {
    const live = [{ ...gw(500), rps: 7 }, { ...gw(3000), rps: 8 }];
    expect(mergeHistory([gw(1000), gw(2000)], live).map((s) => s.t)).toEqual([1000, 2000, 3000]);
  });
});
