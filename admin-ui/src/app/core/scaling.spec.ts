import { formatClock } from './format';
import { instance, plugin, scaledPlugin } from './testing';
import { liveInstances, newestFirst, ownerText, scaleFigures, scaleRange, targetText } from './scaling';

describe('scaling', () => {
  it('names the owner of the replica count in words', () => {
    expect(ownerText(plugin())).toBe('fixed by spec.replicas (kubectl scale)');
    expect(ownerText(scaledPlugin())).toBe('bkg autoscaler, in-flight target 2 per replica');
    expect(ownerText(scaledPlugin({ scaling_owner: 'hpa' }, { metric: 'cpu', target: 70, min_replicas: 1 }))).toBe(
      'HorizontalPodAutoscaler, CPU target 70 %',
    );
    expect(ownerText({ scaling_owner: 'keda', scaling: null })).toBe('keda');
    expect(targetText({ metric: 'queue', target: 5 })).toBe('queue target 5');
  });

  it('counts live instances: not those stopping or stopped', () => {
    const p = plugin({
      instances: [
        instance({ name: 'a', state: 'running' }),
        instance({ name: 'b', state: 'starting', ready: false }),
        instance({ name: 'c', state: 'stopping' }),
        instance({ name: 'd', state: 'stopped' }),
        instance({ name: 'e', state: 'backoff', ready: false }),
      ],
    });
    expect(liveInstances(p)).toBe(3);
    expect(liveInstances({})).toBe(0);
  });

  it('gives min/current/wanted/max and a gauge scale that fits them all', () => {
    expect(scaleFigures(scaledPlugin({ replicas: 2 }))).toEqual({ min: 0, max: 4, current: 2, ready: 2, wanted: 2, scale: 4 });
    // a fixed count has no bounds; the gauge still has room for what runs (here 3 while 2 wanted)
    const fixed = plugin({ replicas: 2, ready_replicas: 2, instances: [instance(), instance(), instance({ state: 'starting' })] });
    expect(scaleFigures(fixed)).toEqual({ min: undefined, max: undefined, current: 3, ready: 2, wanted: 2, scale: 3 });
    expect(scaleFigures(plugin({ replicas: 0, ready_replicas: 0 })).scale).toBe(1);
  });

  it('the card range only for an autoscaled plugin', () => {
    expect(scaleRange(scaledPlugin())).toBe('autoscaled 0–4');
    expect(scaleRange(plugin())).toBe('');
  });

  it('lists the history newest first without changing the input', () => {
    const history = [
      { time: '2026-12-05T12:00:00Z', from: 0, to: 1, reason: 'a' },
      { time: '2026-12-05T12:01:00Z', from: 1, to: 0, reason: 'b' },
    ];
    expect(newestFirst(history).map((e) => e.reason)).toEqual(['b', 'a']);
    expect(history[0].reason).toBe('a');
    expect(newestFirst(undefined)).toEqual([]);
  });

  it('formats a time as a clock time, with the date when not today', () => {
    const now = new Date(2026, 11, 5, 15, 0, 0);
    expect(formatClock(new Date(2026, 11, 5, 9, 3, 7).toISOString(), now)).toBe('09:03:07');
    expect(formatClock(new Date(2026, 11, 4, 23, 59, 1).toISOString(), now)).toBe('2026-12-04 23:59:01');
    // the supervisor writes nanoseconds
    expect(formatClock('2026-12-05T12:03:05.123456789Z', now)).toMatch(/^\d\d:\d\d:05$|^2026-12-0\d \d\d:\d\d:05$/);
    expect(formatClock('not a time', now)).toBe('not a time');
  });
});
