import { ChangeDetectionStrategy, Component, OnDestroy, OnInit, computed, inject } from '@angular/core';
import { AuthStore } from '../core/auth.store';
import { formatMs, formatRate, formatShare } from '../core/format';
import { LiveService } from '../core/live.service';
import { PLUGIN_STATUSES, PluginAction } from '../core/models';
import { PluginsStore, StatusFilter } from '../core/plugins.store';
import { PluginCard } from '../ui/plugin-card';
import { Sparkline } from '../ui/sparkline';

/** How often the dashboard refreshes the gateway-wide figures. */
const OVERVIEW_MS = 5000;

@Component({
  selector: 'app-dashboard',
  imports: [PluginCard, Sparkline],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="mb-4 flex flex-wrap items-end justify-between gap-4">
      <div>
        <h1 class="text-2xl font-bold">Plugins</h1>
        <p class="text-sm text-slate-700" data-testid="counts" aria-live="polite">
          {{ store.counts().total }} {{ store.counts().total === 1 ? 'plugin' : 'plugins' }}:
          <span class="font-semibold text-emerald-800">{{ store.counts().running }} running</span>,
          <span class="font-semibold text-slate-800">{{ store.counts().stopped }} stopped</span>,
          <span class="font-semibold" [class.text-red-800]="store.counts().error > 0">{{ store.counts().error }} in error</span>
          @if (store.counts().transitioning) {
            , {{ store.counts().transitioning }} changing
          }
        </p>
      </div>
      <div class="flex w-full flex-wrap gap-3 sm:w-auto" role="search">
        <div class="min-w-0 flex-1 sm:w-64">
          <label for="search" class="label">Search</label>
          <input id="search" type="search" class="input" placeholder="Name, id, description…" [value]="store.search()" (input)="store.setSearch($any($event.target).value)" />
        </div>
        <div>
          <label for="status-filter" class="label">Status</label>
          <select id="status-filter" class="input" [value]="store.filter()" (change)="setFilter($any($event.target).value)">
            <option value="all">All</option>
            @for (s of statuses; track s) {
              <option [value]="s">{{ s }}</option>
            }
          </select>
        </div>
      </div>
    </div>

    <section aria-label="Gateway, last 10 minutes" class="mb-6 grid grid-cols-2 gap-3 lg:grid-cols-4" data-testid="overview">
      @for (k of kpis(); track k.id) {
        <div class="card p-3" [attr.data-testid]="'kpi-' + k.id">
          <p class="text-xs font-medium text-slate-600">{{ k.title }}</p>
          <p class="text-xl font-semibold tabular-nums" data-testid="kpi-value">{{ k.value }}</p>
          <app-sparkline class="mt-1 h-8" [class]="k.color" [values]="k.series" [label]="k.title + ' over the last 10 minutes'" />
        </div>
      }
    </section>

    @if (store.error()) {
      <div role="alert" class="mb-4 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900" data-testid="load-error">
        <p class="font-semibold">Could not load plugins</p>
        <p>{{ store.error() }}</p>
        <button type="button" class="btn btn-secondary mt-2" (click)="store.load()">Retry</button>
      </div>
    }
    @if (live.state() !== 'open' && live.attempt() > 1) {
      <p class="mb-4 rounded-md border border-amber-300 bg-amber-50 p-2 text-sm text-amber-900" role="status">
        Live updates are unavailable; reconnecting with backoff and refreshing every few seconds meanwhile.
      </p>
    }

    @if (!store.loaded() && store.loading()) {
      <p class="text-slate-700" role="status"><span class="spinner" aria-hidden="true"></span> Loading plugins…</p>
    } @else if (store.loaded() && store.visible().length === 0) {
      <p class="text-slate-700">{{ store.list().length ? 'No plugin matches the search.' : 'No plugins are installed.' }}</p>
    }
    <ul class="grid grid-cols-1 gap-4 md:grid-cols-2 xl:grid-cols-3" aria-label="Plugins">
      @for (p of store.visible(); track p.id) {
        <li>
          <app-plugin-card
            [plugin]="p"
            [telemetry]="store.telemetry()[p.id]"
            [sparkline]="sparklines()[p.id]"
            [busy]="store.busy()[p.id]"
            [actionError]="store.actionErrors()[p.id]"
            [canAdmin]="auth.canAdmin()"
            (action)="run(p.id, $event)"
          />
        </li>
      }
    </ul>
  `,
})
export class DashboardPage implements OnInit, OnDestroy {
  protected readonly store = inject(PluginsStore);
  protected readonly auth = inject(AuthStore);
  protected readonly live = inject(LiveService);
  protected readonly statuses = PLUGIN_STATUSES;
  private timer: ReturnType<typeof setInterval> | null = null;

  /** Request rate, latency and errors of every plugin together, from the gateway's history. */
  protected readonly kpis = computed(() => {
    const samples = this.store.overview()?.samples ?? [];
    const last = samples.at(-1);
    // Latency of the newest sample that had calls, so an idle moment does not blank it.
    const busy = [...samples].reverse().find((s) => s.p50_ms != null);
    return [
      { id: 'rate', title: 'Requests', value: formatRate(last?.request_rate), series: samples.map((s) => s.request_rate), color: 'text-emerald-600' },
      { id: 'p50', title: 'Latency p50', value: formatMs(busy?.p50_ms), series: samples.map((s) => s.p50_ms ?? 0), color: 'text-blue-600' },
      { id: 'p99', title: 'Latency p99', value: formatMs(busy?.p99_ms), series: samples.map((s) => s.p99_ms ?? 0), color: 'text-violet-600' },
      { id: 'errors', title: 'Error rate (5xx)', value: formatShare(last?.error_rate), series: samples.map((s) => s.error_rate), color: (last?.error_rate ?? 0) > 0 ? 'text-red-600' : 'text-slate-500' },
    ];
  });
  protected readonly sparklines = computed(() =>
    Object.fromEntries((this.store.overview()?.plugins ?? []).map((p) => [p.plugin_id, p.request_rate])),
  );

  async ngOnInit(): Promise<void> {
    void this.store.loadOverview();
    this.timer = setInterval(() => void this.store.loadOverview(), OVERVIEW_MS);
    await this.store.load();
    // First figures at once; the live socket keeps them current afterwards.
    await Promise.all(
      this.store
        .list()
        .filter((p) => p.status === 'running' && !this.store.telemetry()[p.id])
        .map((p) => this.store.refreshTelemetry(p.id)),
    );
  }

  ngOnDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  protected setFilter(value: string): void {
    this.store.setFilter(value as StatusFilter);
  }

  protected async run(id: string, action: PluginAction): Promise<void> {
    if (await this.store.runAction(id, action)) await this.live.settle(id);
  }
}
