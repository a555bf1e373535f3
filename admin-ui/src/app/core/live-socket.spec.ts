import { LiveSocket, backoffDelay } from './live-socket';

class FakeWs {
  static all: FakeWs[] = [];
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  closed = false;
  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWs.all.push(this);
  }
  close() {
    this.closed = true;
  }
}

describe('LiveSocket', () => {
  beforeEach(() => {
    FakeWs.all = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it('backs off exponentially with jitter, capped', () => {
    expect(backoffDelay(1, 500, 30_000, () => 1)).toBe(500);
    expect(backoffDelay(2, 500, 30_000, () => 1)).toBe(1000);
    expect(backoffDelay(3, 500, 30_000, () => 0)).toBe(1000);
    expect(backoffDelay(20, 500, 30_000, () => 1)).toBe(30_000);
  });

  it('authenticates with subprotocols, parses messages, reconnects after a drop', () => {
    const messages: unknown[] = [];
    const states: string[] = [];
    const failures: number[] = [];
    const socket = new LiveSocket({
      url: 'ws://x/ws/plugins',
      protocols: () => ['bkg.v1', 'bkg.bearer.k'],
      onMessage: (m) => messages.push(m),
      onState: (s) => states.push(s),
      onFailure: (n) => failures.push(n),
      create: (url, p) => new FakeWs(url, p) as unknown as WebSocket,
      random: () => 1,
    });
    socket.start();
    expect(FakeWs.all[0].protocols).toEqual(['bkg.v1', 'bkg.bearer.k']);
    FakeWs.all[0].onopen!();
    FakeWs.all[0].onmessage!({ data: '{"type":"telemetry","plugin_id":"echo"}' });
    FakeWs.all[0].onmessage!({ data: 'not json' });
    expect(messages).toEqual([{ type: 'telemetry', plugin_id: 'echo' }]);

    FakeWs.all[0].onclose!(); // dropped after being open: not a failure
    expect(failures).toEqual([]);
    vi.advanceTimersByTime(499);
    expect(FakeWs.all.length).toBe(1);
    vi.advanceTimersByTime(1);
    expect(FakeWs.all.length).toBe(2);

    FakeWs.all[1].onclose!(); // never opened: a failure, and a longer wait
    expect(failures).toEqual([2]);
    vi.advanceTimersByTime(999);
    expect(FakeWs.all.length).toBe(2);
    vi.advanceTimersByTime(1);
    expect(FakeWs.all.length).toBe(3);
    expect(states).toContain('open');

    socket.stop();
    expect(FakeWs.all[2].closed).toBe(true);
    vi.advanceTimersByTime(60_000);
    expect(FakeWs.all.length).toBe(3);
  });
});
