import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from './api.service';
import { LiveService } from './live.service';
import { PluginsStore } from './plugins.store';
import { SessionKey } from './session-key';
import { plugin } from './testing';

class FakeWs {
  static all: FakeWs[] = [];
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWs.all.push(this);
  }
  close() {}
  send(data: unknown) {
    this.onmessage?.({ data: JSON.stringify(data) });
  }
}

describe('LiveService', () => {
  const RealWs = globalThis.WebSocket;
  let api: Record<string, ReturnType<typeof vi.fn>>;

  beforeEach(() => {
    FakeWs.all = [];
    globalThis.WebSocket = FakeWs as unknown as typeof WebSocket;
    api = { plugins: vi.fn().mockResolvedValue([plugin()]), whoami: vi.fn(), telemetry: vi.fn(), logs: vi.fn() };
    TestBed.configureTestingModule({ providers: [provideRouter([]), { provide: ApiService, useValue: api }] });
    TestBed.inject(SessionKey).set('bkg_k');
  });
  afterEach(() => {
    globalThis.WebSocket = RealWs;
    sessionStorage.clear();
  });

  it('opens /ws/plugins with the bearer subprotocol and applies pushes to the store', async () => {
    const live = TestBed.inject(LiveService);
    const store = TestBed.inject(PluginsStore);
    live.start();
    const ws = FakeWs.all[0];
    expect(ws.url).toMatch(/^ws:\/\/.*\/ws\/plugins$/);
    expect(ws.protocols).toEqual(['bkg.v1', 'bkg.bearer.bkg_k']);
    ws.onopen!();
    expect(live.state()).toBe('open');
    await Promise.resolve();
    ws.send({ type: 'status', plugin: plugin({ status: 'stopping' }) });
    expect(store.plugins()['echo'].status).toBe('stopping');
    ws.send({ type: 'telemetry', plugin_id: 'echo', cpu_percent: 3, memory_mb: 5, uptime_secs: 1, request_count: 2, error_count: 0, replicas: 1 });
    expect(store.telemetry()['echo'].cpu_percent).toBe(3);
    expect(store.telemetry()['echo']).not.toHaveProperty('type');
    expect(store.history()['echo'].length).toBe(1);
    live.stop();
    expect(live.state()).toBe('closed');
  });

  it('streams one plugin’s log lines', () => {
    const live = TestBed.inject(LiveService);
    const lines: string[] = [];
    const stop = live.watchLogs('echo', (l) => lines.push(l.message), () => undefined);
    const ws = FakeWs.all[0];
    expect(ws.url).toMatch(/\/ws\/plugins\/echo$/);
    ws.onopen!();
    ws.send({ type: 'log', plugin_id: 'echo', ts: 't', stream: 'stdout', message: 'hello' });
    ws.send({ type: 'log', plugin_id: 'other', ts: 't', stream: 'stdout', message: 'not mine' });
    expect(lines).toEqual(['hello']);
    stop();
  });
});
