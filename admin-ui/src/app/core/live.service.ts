import { DestroyRef, Injectable, inject, signal } from '@angular/core';
import { ApiService } from './api.service';
import { LiveSocket, LiveState, wsUrl } from './live-socket';
import { LiveMessage, LogLine } from './models';
import { PluginsStore } from './plugins.store';
import { SessionKey } from './session-key';

/** While the live socket is down, the dashboard refreshes this often (a fallback, not the main path). */
export const FALLBACK_POLL_MS = 5000;

function protocols(key: string | null): string[] {
  return key ? ['bkg.v1', `bkg.bearer.${key}`] : ['bkg.v1'];
}

/** Live updates from `WS /ws/plugins`: telemetry and status pushes go into the PluginsStore. */
@Injectable({ providedIn: 'root' })
export class LiveService {
  private readonly store = inject(PluginsStore);
  private readonly api = inject(ApiService);
  private readonly session = inject(SessionKey);
  private socket: LiveSocket | null = null;
  private poll: ReturnType<typeof setInterval> | null = null;

  readonly state = signal<LiveState>('closed');
  readonly attempt = signal(0);

  constructor() {
    inject(DestroyRef).onDestroy(() => this.stop());
  }

  start(): void {
    if (this.socket) return;
    this.socket = new LiveSocket({
      url: wsUrl('/ws/plugins'),
      protocols: () => protocols(this.session.key()),
      onMessage: (m) => this.dispatch(m as LiveMessage),
      onState: (state, attempt) => {
        this.state.set(state);
        this.attempt.set(attempt);
        if (state === 'open') {
          this.stopPolling();
          void this.store.load(); // catch up on what happened while disconnected
        } else if (state === 'closed') {
          this.startPolling();
        }
      },
      onFailure: (attempt) => {
        // A socket that never opens may mean the key was revoked: ask REST, which can tell (401).
        if (attempt === 2 || attempt % 5 === 0) void this.api.whoami().catch(() => undefined);
      },
    });
    this.socket.start();
  }

  stop(): void {
    this.socket?.stop();
    this.socket = null;
    this.stopPolling();
    this.state.set('closed');
  }

  /**
   * After an action: with the socket up, its status pushes show the transition; with it down, asks
   * for the plugin until it leaves starting/stopping, so the badge does not wait for the slow poll.
   */
  async settle(id: string, intervalMs = 700, maxTries = 45): Promise<void> {
    for (let i = 0; i < maxTries && this.state() !== 'open'; i++) {
      await new Promise((r) => setTimeout(r, intervalMs));
      const p = await this.store.loadOne(id);
      if (!p || (p.status !== 'starting' && p.status !== 'stopping')) {
        if (p?.status === 'running') await this.store.refreshTelemetry(id);
        return;
      }
    }
  }

  private dispatch(m: LiveMessage): void {
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'telemetry': {
        const { type: _type, ...t } = m;
        this.store.applyTelemetry(t);
        break;
      }
      case 'status':
        if (m.plugin?.id) this.store.upsert(m.plugin);
        break;
      default:
        break; // log lines are read by the per-plugin socket (watchLogs)
    }
  }

  private startPolling(): void {
    if (this.poll) return;
    this.poll = setInterval(() => void this.refresh(), FALLBACK_POLL_MS);
  }

  private stopPolling(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  private async refresh(): Promise<void> {
    if (!this.session.key()) return;
    await this.store.load();
    await Promise.all(
      this.store
        .list()
        .filter((p) => p.status === 'running')
        .map((p) => this.store.refreshTelemetry(p.id)),
    );
  }

  /** Streams one plugin's log lines (`WS /ws/plugins/{id}`). Returns a function that stops it. */
  watchLogs(id: string, onLine: (line: LogLine) => void, onState: (state: LiveState) => void): () => void {
    const socket = new LiveSocket({
      url: wsUrl(`/ws/plugins/${encodeURIComponent(id)}`),
      protocols: () => protocols(this.session.key()),
      onMessage: (data) => {
        const m = data as LiveMessage;
        if (m?.type === 'log' && m.plugin_id === id) {
          onLine({ ts: m.ts, stream: m.stream, message: m.message });
        } else if (m?.type === 'telemetry' && this.state() !== 'open') {
          const { type: _type, ...t } = m;
          this.store.applyTelemetry(t);
        } else if (m?.type === 'status' && m.plugin?.id === id && this.state() !== 'open') {
          this.store.upsert(m.plugin);
        }
      },
      onState,
    });
    socket.start();
    return () => socket.stop();
  }
}
