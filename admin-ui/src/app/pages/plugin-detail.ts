import { ChangeDetectionStrategy, Component, OnDestroy, computed, effect, inject, input } from '@angular/core';
import { RouterLink } from '@angular/router';
import { AuthStore } from '../core/auth.store';
import { LiveService } from '../core/live.service';
import { formatAgo, formatClock, formatCount, formatMemory, formatPercent, formatUptime } from '../core/format';
import { PluginAction, PluginEvent, PluginInfo, Telemetry } from '../core/models';
import { PluginsStore, Sample } from '../core/plugins.store';
import { ScalingPanel } from '../ui/scaling-panel';
import { ConfigEditor } from '../ui/config-editor';
import { LogTail } from '../ui/log-tail';
import { allowedActions } from '../ui/plugin-card';
import { SchemaView } from '../ui/schema-view';
import { Icon, IconName } from '../ui/icon';
import { StatusBadge } from '../ui/status-badge';
import { Metric, TelemetryChart } from '../ui/telemetry-chart';

/** How often the details page asks for telemetry when the live socket sends none. */
const TELEMETRY_GAP_MS = 5000;

@Component({
  selector: 'app-plugin-detail',
  imports: [RouterLink, StatusBadge, SchemaView, ConfigEditor, LogTail, TelemetryChart, ScalingPanel, Icon],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <nav aria-label="Breadcrumb" class="mb-3 text-sm"><a routerLink="/" class="text-blue-800 underline">Plugins</a> / {{ id() }}</nav>
    @if (plugin(); as p) {
      <header class="mb-6 flex flex-wrap items-start justify-between gap-4">
        <div>
          <h1 class="flex items-center gap-3 text-2xl font-bold">{{ p.name }} <app-status-badge [status]="p.status" /></h1>
          <p class="text-sm text-slate-700">{{ p.id }} · v{{ p.version }} · {{ p.implementation }}@if (p.author) { · by {{ p.author }}}</p>
          @if (p.description) {<p class="mt-1 max-w-3xl text-sm">{{ p.description }}</p>}
        </div>
        <div class="flex flex-wrap gap-2">
          @if (auth.canAdmin()) {
            @for (a of actions; track a) {
              <button type="button" class="btn" [class]="a === 'stop' ? 'btn-danger' : 'btn-secondary'" [disabled]="!allowed()[a] || !!busy()" [attr.aria-busy]="busy() === a" (click)="run(a)">
                @if (busy() === a) {<span class="spinner" aria-hidden="true"></span>}
                {{ a === 'start' ? 'Start' : a === 'stop' ? 'Stop' : 'Restart' }}
              </button>
            }
          }
          @if (auth.canInvoke(p.id)) {
            <a class="btn btn-primary" routerLink="/playground" [queryParams]="{ plugin: p.id }">Open in playground</a>
          }
        </div>
      </header>
      @if (store.actionErrors()[p.id]; as err) {
        <p role="alert" class="mb-4 rounded-md border border-red-300 bg-red-50 p-2 text-sm text-red-900">{{ err }}</p>
      }
      @if (p.last_error) {
        <section class="mb-6 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900" aria-labelledby="last-error">
          <h2 id="last-error" class="font-semibold">Last error</h2>
          <p class="whitespace-pre-wrap font-mono text-xs">{{ p.last_error }}</p>
        </section>
      }

      <section class="mb-8" aria-labelledby="telemetry-title">
        <h2 id="telemetry-title" class="section-title flex items-center gap-2"><app-icon name="chart" [size]="5" />Telemetry <span class="text-sm font-normal text-slate-600">(last {{ minutes }} min, kept by the gateway)</span></h2>
        <dl class="mb-3 grid grid-cols-2 gap-3 text-sm sm:grid-cols-3 lg:grid-cols-6">
          <div class="card p-2"><dt class="text-xs text-slate-600">CPU</dt><dd class="font-semibold">{{ fmt.percent(t()?.cpu_percent) }}</dd></div>
          <div class="card p-2"><dt class="text-xs text-slate-600">Memory</dt><dd class="font-semibold">{{ fmt.memory(t()?.memory_mb) }}</dd></div>
          <div class="card p-2"><dt class="text-xs text-slate-600">Uptime</dt><dd class="font-semibold">{{ fmt.uptime(t()?.uptime_secs) }}</dd></div>
          <div class="card p-2"><dt class="text-xs text-slate-600">Requests</dt><dd class="font-semibold">{{ fmt.count(t()?.request_count) }}</dd></div>
          <div class="card p-2"><dt class="text-xs text-slate-600">Errors</dt><dd class="font-semibold" [class.text-red-700]="(t()?.error_count ?? 0) > 0">{{ fmt.count(t()?.error_count) }}</dd></div>
          <div class="card p-2"><dt class="text-xs text-slate-600">GPU</dt><dd class="font-semibold">{{ p.resources.gpu_count ? p.resources.gpu_count + ' × ' + (p.resources.gpu_vendor || 'any') : 'none' }}</dd></div>
        </dl>
        <div class="grid grid-cols-1 gap-3 md:grid-cols-2 xl:grid-cols-3 2xl:grid-cols-5" data-testid="charts">
          @for (m of metrics; track m) {
            <app-telemetry-chart [samples]="samples()" [metric]="m" />
          }
        </div>
      </section>

      <div class="grid grid-cols-1 gap-8 lg:grid-cols-2 2xl:grid-cols-3">
        <section aria-labelledby="events-title" class="lg:col-span-2 2xl:col-span-1 2xl:order-last" data-testid="events">
          <h2 id="events-title" class="section-title flex items-center gap-2"><app-icon name="clock" [size]="5" />Events</h2>
          <ol class="card max-h-[32rem] space-y-2 overflow-y-auto p-3 text-sm">
            @for (e of events(); track $index) {
              <li class="flex items-start gap-2" data-testid="event" [attr.data-kind]="e.kind">
                <span class="mt-0.5" [class]="eventColor(e.kind)"><app-icon [name]="eventIcon(e.kind)" /></span>
                <div class="min-w-0">
                  <p class="break-words"><span class="font-medium">{{ e.kind }}</span> · {{ e.message }}</p>
                  <p class="text-xs text-slate-600"><time [attr.datetime]="e.time" [attr.title]="clock(e.time)">{{ ago(e.time) }}</time></p>
                </div>
              </li>
            } @empty {
              <li class="text-slate-700">No events in the last 10 minutes.</li>
            }
          </ol>
        </section>
        <section aria-labelledby="caps-title">
          <h2 id="caps-title" class="section-title">Capabilities ({{ p.capabilities.length }})</h2>
          <ul class="space-y-3">
            @for (c of p.capabilities; track c.id) {
              <li class="card">
                <h3 class="font-semibold">{{ c.name }} <code class="mono ml-1 rounded bg-slate-100 px-1 text-slate-800">{{ c.id }}</code></h3>
                @if (c.description) {<p class="mb-2 text-sm text-slate-700">{{ c.description }}</p>}
                <div class="grid gap-3">
                  <app-schema-view [schema]="c.input_schema" label="Input" />
                  <app-schema-view [schema]="c.output_schema" label="Output" />
                </div>
                @if (auth.canInvoke(p.id, c.id)) {
                  <a class="mt-2 inline-block text-sm text-blue-800 underline" routerLink="/playground" [queryParams]="{ plugin: p.id, capability: c.id }">Try {{ c.id }} in the playground</a>
                }
              </li>
            } @empty {
              <li class="text-sm text-slate-700">The plugin reports no capabilities (it may be stopped).</li>
            }
          </ul>
        </section>
        <div class="space-y-8">
          <section aria-labelledby="config-title">
            <h2 id="config-title" class="section-title">Configuration</h2>
            <app-config-editor [plugin]="p" />
          </section>
          <section aria-labelledby="scaling-title" data-testid="scaling">
            <h2 id="scaling-title" class="section-title">Scaling</h2>
            <app-scaling-panel [plugin]="p" />
          </section>
          <section aria-labelledby="res-title">
            <h2 id="res-title" class="section-title">Resources and instances</h2>
            <dl class="grid grid-cols-2 gap-x-4 gap-y-1 text-sm sm:grid-cols-3">
              <div><dt class="text-xs text-slate-600">Memory limit</dt><dd>{{ p.resources.memory || '—' }}</dd></div>
              <div><dt class="text-xs text-slate-600">CPU limit</dt><dd>{{ p.resources.cpu || '—' }}</dd></div>
              <div><dt class="text-xs text-slate-600">Timeout</dt><dd>{{ p.resources.timeout_secs }} s</dd></div>
              <div><dt class="text-xs text-slate-600">Max concurrency</dt><dd>{{ p.resources.max_concurrency }}</dd></div>
              <div><dt class="text-xs text-slate-600">Replicas ready</dt><dd>{{ p.ready_replicas }}/{{ p.replicas }}</dd></div>
              <div><dt class="text-xs text-slate-600">Endpoint</dt><dd class="break-all font-mono text-xs">{{ p.endpoint || '—' }}</dd></div>
            </dl>
            @if (p.instances?.length) {
              <div class="mt-3 overflow-x-auto">
                <table class="w-full text-left text-xs">
                  <caption class="sr-only">Instances</caption>
                  <thead class="text-slate-600"><tr><th scope="col" class="py-1 pr-2">Instance</th><th scope="col" class="pr-2">State</th><th scope="col" class="pr-2">Ready</th><th scope="col" class="pr-2">PID</th><th scope="col" class="pr-2">Restarts</th><th scope="col">Started</th></tr></thead>
                  <tbody>
                    @for (i of p.instances; track i.name) {
                      <tr class="border-t border-slate-100">
                        <td class="py-1 pr-2 font-mono">{{ i.name }}</td><td class="pr-2">{{ i.state }}</td><td class="pr-2">{{ i.ready ? 'yes' : 'no' }}</td>
                        <td class="pr-2">{{ i.pid ?? '—' }}</td><td class="pr-2">{{ i.restarts }}</td><td>@if (i.started_at) {<time [attr.datetime]="i.started_at" [attr.title]="clock(i.started_at)">{{ ago(i.started_at) }}</time>} @else {—}</td>
                      </tr>
                      @if (i.last_error) {<tr><td colspan="6" class="pb-1 text-red-800">{{ i.last_error }}</td></tr>}
                    }
                  </tbody>
                </table>
              </div>
            }
          </section>
          @if (p.conditions?.length) {
            <section aria-labelledby="cond-title">
              <h2 id="cond-title" class="section-title">Conditions</h2>
              <ul class="space-y-2 text-sm">
                @for (c of p.conditions; track c.type) {
                  <li class="card p-2">
                    <span class="font-semibold">{{ c.type }}</span>
                    <span class="ml-2 rounded px-1.5 text-xs" [class]="c.status === 'True' ? 'bg-emerald-100 text-emerald-900' : 'bg-amber-100 text-amber-900'">{{ c.status }}</span>
                    <span class="ml-2 text-slate-700">{{ c.reason }}</span>
                    @if (c.message) {<p class="text-xs text-slate-700">{{ c.message }}</p>}
                    <p class="text-xs text-slate-600">since <time [attr.datetime]="c.last_transition_time" [attr.title]="clock(c.last_transition_time)">{{ ago(c.last_transition_time) }}</time></p>
                  </li>
                }
              </ul>
            </section>
          }
        </div>
      </div>

      <section class="mt-8" aria-labelledby="logs-title">
        <h2 id="logs-title" class="section-title flex items-center gap-2"><app-icon name="terminal" [size]="5" />Logs</h2>
        <app-log-tail [pluginId]="p.id" />
      </section>
    } @else if (store.error()) {
      <p role="alert" class="rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900">{{ store.error() }}</p>
    } @else {
      <p role="status"><span class="spinner" aria-hidden="true"></span> Loading…</p>
    }
  `,
})
export class PluginDetailPage implements OnDestroy {
  readonly id = input.required<string>();
  protected readonly store = inject(PluginsStore);
  protected readonly auth = inject(AuthStore);
  private readonly live = inject(LiveService);
  protected readonly actions: PluginAction[] = ['start', 'stop', 'restart'];
  protected readonly metrics: Metric[] = ['rps', 'p99', 'eps', 'cpu', 'memory'];
  protected readonly fmt = { percent: formatPercent, memory: formatMemory, uptime: formatUptime, count: formatCount };

  protected readonly plugin = computed<PluginInfo | undefined>(() => this.store.plugins()[this.id()]);
  protected readonly t = computed<Telemetry | undefined>(() => this.store.telemetry()[this.id()]);
  protected readonly samples = computed<Sample[]>(() => this.store.history()[this.id()] ?? []);
  /** Newest first. */
  protected readonly events = computed<PluginEvent[]>(() => [...(this.store.events()[this.id()] ?? [])].reverse());
  protected readonly ago = (t: string) => formatAgo(t);
  protected readonly clock = (t: string) => formatClock(t);
  protected readonly busy = computed(() => this.store.busy()[this.id()]);
  protected readonly allowed = computed(() => allowedActions(this.plugin() ?? { status: 'stopped' }));
  protected readonly minutes = 10;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor() {
    effect(() => {
      const id = this.id();
      void this.store.loadOne(id).then(() => this.store.refreshTelemetry(id));
      // The gateway's last 10 minutes, so the charts and events are full at once.
      void this.store.loadHistory(id);
    });
    // Telemetry arrives over the live socket; ask only when none came for a while (e.g. socket down).
    this.timer = setInterval(() => {
      const last = this.samples().at(-1)?.t ?? 0;
      if (this.plugin()?.status === 'running' && Date.now() - last > TELEMETRY_GAP_MS) {
        void this.store.refreshTelemetry(this.id());
      }
      // New events (starts, crashes, scale and config changes) and gateway latency.
      void this.store.loadHistory(this.id());
    }, TELEMETRY_GAP_MS);
  }

  ngOnDestroy(): void {
    if (this.timer) clearInterval(this.timer);
  }

  protected eventIcon(kind: string): IconName {
    const icons: Record<string, IconName> = { start: 'play', stop: 'stop', crash: 'crash', error: 'error', scale: 'scale', config: 'config' };
    return icons[kind] ?? 'info';
  }

  protected eventColor(kind: string): string {
    const colors: Record<string, string> = {
      start: 'text-emerald-700',
      stop: 'text-slate-600',
      crash: 'text-amber-700',
      error: 'text-red-700',
      scale: 'text-blue-700',
      config: 'text-violet-700',
    };
    return colors[kind] ?? 'text-slate-600';
  }

  protected async run(a: PluginAction): Promise<void> {
    if (await this.store.runAction(this.id(), a)) await this.live.settle(this.id());
  }
}
