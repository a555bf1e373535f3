import { TestBed } from '@angular/core/testing';
import { ApiError } from './api-error';
import { ApiService } from './api.service';
import { PluginsStore, appendSample } from './plugins.store';
import { plugin, telemetry } from './testing';

describe('PluginsStore', () => {
  let api: Record<string, ReturnType<typeof vi.fn>>;
  let store: InstanceType<typeof PluginsStore>;

  beforeEach(() => {
    api = { plugins: vi.fn(), plugin: vi.fn(), action: vi.fn(), setConfig: vi.fn(), telemetry: vi.fn() };
    TestBed.configureTestingModule({ providers: [{ provide: ApiService, useValue: api }] });
    store = TestBed.inject(PluginsStore);
  });

  it('loads plugins and counts them by status', async () => {
    api['plugins'].mockResolvedValue([
      plugin({ id: 'b', name: 'Bravo', status: 'stopped' }),
      plugin({ id: 'a', name: 'Alpha' }),
      plugin({ id: 'c', name: 'Charlie', status: 'error' }),
      plugin({ id: 'd', name: 'Delta', status: 'starting' }),
    ]);
    await store.load();
    expect(store.loaded()).toBe(true);
    expect(store.list().map((p) => p.id)).toEqual(['a', 'b', 'c', 'd']);
    expect(store.counts()).toEqual({ total: 4, running: 1, stopped: 1, error: 1, transitioning: 1 });
  });

  it('filters by status and searches name, id and description', async () => {
    api['plugins'].mockResolvedValue([
      plugin({ id: 'echo', name: 'Echo' }),
      plugin({ id: 'candle', name: 'Candle', description: 'Sentence embeddings', status: 'stopped' }),
    ]);
    await store.load();
    store.setSearch('EMBED');
    expect(store.visible().map((p) => p.id)).toEqual(['candle']);
    store.setSearch('');
    store.setFilter('running');
    expect(store.visible().map((p) => p.id)).toEqual(['echo']);
  });

  it('keeps the load error readable', async () => {
    api['plugins'].mockRejectedValue(ApiError.network('Failed to fetch'));
    await store.load();
    expect(store.error()).toBe('Gateway unreachable: Failed to fetch');
  });

  it('applies status pushes and actions, tracking progress', async () => {
    store.upsert(plugin());
    let resolve!: (p: unknown) => void;
    api['action'].mockReturnValue(new Promise((r) => (resolve = r)));
    const done = store.runAction('echo', 'stop');
    expect(store.busy()['echo']).toBe('stop');
    resolve(plugin({ status: 'stopping' }));
    expect(await done).toBe(true);
    expect(store.busy()['echo']).toBeUndefined();
    expect(store.plugins()['echo'].status).toBe('stopping');
    store.upsert(plugin({ status: 'stopped' }));
    expect(store.counts().stopped).toBe(1);
  });

  it('shows a 403 on an action', async () => {
    store.upsert(plugin());
    api['action'].mockRejectedValue(ApiError.fromBody(403, 'Forbidden', JSON.stringify({ title: 'Forbidden', status: 403, detail: 'needs admin' })));
    expect(await store.runAction('echo', 'stop')).toBe(false);
    expect(store.actionErrors()['echo']).toContain('403');
  });

  it('derives request and error rates from telemetry counters', () => {
    store.applyTelemetry(telemetry({ request_count: 10, error_count: 0 }), 1000);
    store.applyTelemetry(telemetry({ request_count: 30, error_count: 2 }), 3000);
    const h = store.history()['echo'];
    expect(h.length).toBe(2);
    expect(h[1].rps).toBe(10);
    expect(h[1].eps).toBe(1);
    expect(store.telemetry()['echo'].request_count).toBe(30);
  });

  it('drops history older than ten minutes and survives counter resets', () => {
    let h = appendSample([], telemetry({ request_count: 100 }), 0);
    h = appendSample(h, telemetry({ request_count: 4 }), 2000); // restarted plugin
    expect(h[1].rps).toBe(2);
    h = appendSample(h, telemetry({ request_count: 4 }), 11 * 60 * 1000);
    expect(h.length).toBe(1);
  });

  it('saves config and keeps the answer', async () => {
    store.upsert(plugin());
    api['setConfig'].mockResolvedValue(plugin({ config: { greeting: 'hi' } }));
    const p = await store.saveConfig('echo', { greeting: 'hi' });
    expect(p.config).toEqual({ greeting: 'hi' });
    expect(store.plugins()['echo'].config).toEqual({ greeting: 'hi' });
    expect(api['setConfig']).toHaveBeenCalledWith('echo', { greeting: 'hi' });
  });
});
