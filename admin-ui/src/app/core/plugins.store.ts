import { computed, inject } from '@angular/core';
import { patchState, signalStore, withComputed, withMethods, withProps, withState } from '@ngrx/signals';
import { describeError } from './api-error';
import { ApiService } from './api.service';
import { Overview, PluginAction, PluginEvent, PluginInfo, PluginStatus, Telemetry, TelemetrySample } from './models';

/** One point of a plugin's telemetry history. */
export interface Sample {
  /** Milliseconds since the epoch. */
  t: number;
  cpu: number;
  memory: number;
  /** Requests per second since the previous sample. */
  rps: number;
  /** Errors per second since the previous sample. */
  eps: number;
  requests: number;
  errors: number;
  /** Gateway latency over the interval (gateway samples only). */
  p50?: number | null;
  p99?: number | null;
}

/** A gateway history sample as a chart point. */
export function fromGateway(s: TelemetrySample): Sample {
  return {
    t: s.time_ms,
    cpu: s.cpu_percent,
    memory: s.memory_mb,
    rps: s.request_rate,
    eps: s.request_rate * s.error_rate,
    requests: s.runtime_requests,
    errors: s.runtime_errors,
    p50: s.p50_ms ?? null,
    p99: s.p99_ms ?? null,
  };
}

/** The gateway's history, then the live samples that came after its newest one. */
export function mergeHistory(gateway: readonly Sample[], live: readonly Sample[]): Sample[] {
  const last = gateway.at(-1)?.t ?? 0;
  return [...gateway, ...live.filter((s) => s.t > last)];
}

export type StatusFilter = 'all' | PluginStatus;

/** How long telemetry history is kept, per plugin. */
export const HISTORY_MS = 10 * 60 * 1000;
const HISTORY_MAX = 1200;

interface PluginsState {
  plugins: Record<string, PluginInfo>;
  telemetry: Record<string, Telemetry>;
  history: Record<string, Sample[]>;
  events: Record<string, PluginEvent[]>;
  overview: Overview | null;
  loading: boolean;
  loaded: boolean;
  error: string | null;
  filter: StatusFilter;
  search: string;
  busy: Record<string, PluginAction | undefined>;
  actionErrors: Record<string, string | undefined>;
}

const initial: PluginsState = {
  plugins: {},
  telemetry: {},
  history: {},
  events: {},
  overview: null,
  loading: false,
  loaded: false,
  error: null,
  filter: 'all',
  search: '',
  busy: {},
  actionErrors: {},
};

/** Appends a telemetry reading to a history, deriving rates from the counters. */
export function appendSample(history: readonly Sample[], t: Telemetry, at: number): Sample[] {
  const prev = history.at(-1);
  let rps = 0;
  let eps = 0;
  if (prev && at > prev.t) {
    const secs = (at - prev.t) / 1000;
    // Counters reset when a plugin restarts: a drop is a new start, not a negative rate.
    rps = Math.max(0, t.request_count - prev.requests) / secs;
    eps = Math.max(0, t.error_count - prev.errors) / secs;
    if (t.request_count < prev.requests) rps = t.request_count / secs;
    if (t.error_count < prev.errors) eps = t.error_count / secs;
  }
  const sample: Sample = {
    t: at,
    cpu: t.cpu_percent,
    memory: t.memory_mb,
    rps,
    eps,
    requests: t.request_count,
    errors: t.error_count,
  };
  const cutoff = at - HISTORY_MS;
  const kept = history.filter((s) => s.t >= cutoff && s.t < at);
  kept.push(sample);
  return kept.length > HISTORY_MAX ? kept.slice(kept.length - HISTORY_MAX) : kept;
}

export const PluginsStore = signalStore(
  { providedIn: 'root' },
  withState(initial),
  withProps(() => ({ _api: inject(ApiService) })),
  withComputed((store) => {
    const list = computed(() =>
      Object.values(store.plugins()).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id)),
    );
    return {
      list,
      counts: computed(() => {
        const counts = { total: 0, running: 0, stopped: 0, error: 0, transitioning: 0 };
        for (const p of list()) {
          counts.total++;
          if (p.status === 'running') counts.running++;
          else if (p.status === 'stopped') counts.stopped++;
          else if (p.status === 'error') counts.error++;
          else counts.transitioning++;
        }
        return counts;
      }),
      visible: computed(() => {
        const filter = store.filter();
        const q = store.search().trim().toLowerCase();
        return list().filter(
          (p) =>
            (filter === 'all' || p.status === filter) &&
            (!q ||
              [p.id, p.name, p.description, p.implementation, p.author].some((s) => s?.toLowerCase().includes(q))),
        );
      }),
    };
  }),
  withMethods((store) => {
    const applyTelemetry = (t: Telemetry, at = Date.now()): void => {
      patchState(store, (s) => ({
        telemetry: { ...s.telemetry, [t.plugin_id]: t },
        history: { ...s.history, [t.plugin_id]: appendSample(s.history[t.plugin_id] ?? [], t, at) },
      }));
    };
    return {
    applyTelemetry,
    async load(): Promise<void> {
      patchState(store, { loading: true });
      try {
        const plugins = await store._api.plugins();
        patchState(store, {
          plugins: Object.fromEntries(plugins.map((p) => [p.id, p])),
          loading: false,
          loaded: true,
          error: null,
        });
      } catch (e) {
        patchState(store, { loading: false, error: describeError(e) });
      }
    },
    async loadOne(id: string): Promise<PluginInfo | null> {
      try {
        const p = await store._api.plugin(id);
        patchState(store, (s) => ({ plugins: { ...s.plugins, [p.id]: p }, error: null }));
        return p;
      } catch (e) {
        patchState(store, { error: describeError(e) });
        return null;
      }
    },
    /** A plugin's new state (REST answer or a `status` push). */
    upsert(plugin: PluginInfo): void {
      patchState(store, (s) => ({ plugins: { ...s.plugins, [plugin.id]: plugin } }));
    },
    async refreshTelemetry(id: string): Promise<void> {
      try {
        applyTelemetry(await store._api.telemetry(id));
      } catch {
        // telemetry is best effort; the card keeps its last figures
      }
    },
    /** Fills a plugin's charts and events from the gateway's 10-minute history. */
    async loadHistory(id: string): Promise<void> {
      try {
        const h = await store._api.history(id);
        const gateway = h.samples.map(fromGateway);
        patchState(store, (s) => ({
          history: { ...s.history, [id]: mergeHistory(gateway, s.history[id] ?? []) },
          events: { ...s.events, [id]: h.events },
        }));
      } catch {
        // best effort: the live socket still fills the charts from now on
      }
    },
    async loadOverview(): Promise<void> {
      try {
        patchState(store, { overview: await store._api.overview() });
      } catch {
        // best effort
      }
    },
    setFilter(filter: StatusFilter): void {
      patchState(store, { filter });
    },
    setSearch(search: string): void {
      patchState(store, { search });
    },
    async runAction(id: string, action: PluginAction): Promise<boolean> {
      patchState(store, (s) => ({
        busy: { ...s.busy, [id]: action },
        actionErrors: { ...s.actionErrors, [id]: undefined },
      }));
      try {
        const plugin = await store._api.action(id, action);
        patchState(store, (s) => ({ plugins: { ...s.plugins, [id]: plugin } }));
        return true;
      } catch (e) {
        patchState(store, (s) => ({ actionErrors: { ...s.actionErrors, [id]: describeError(e) } }));
        return false;
      } finally {
        patchState(store, (s) => ({ busy: { ...s.busy, [id]: undefined } }));
      }
    },
    /** Saves a config; the answer (the plugin as it now is) replaces the stored one. */
    async saveConfig(id: string, config: Record<string, unknown>): Promise<PluginInfo> {
      const plugin = await store._api.setConfig(id, config);
      patchState(store, (s) => ({ plugins: { ...s.plugins, [id]: plugin } }));
      return plugin;
    },
    clear(): void {
      patchState(store, initial);
    },
    };
  }),
);
