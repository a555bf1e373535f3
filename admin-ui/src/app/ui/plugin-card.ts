import { ChangeDetectionStrategy, Component, computed, input, output } from '@angular/core';
import { RouterLink } from '@angular/router';
import { formatCount, formatMemory, formatPercent, formatUptime } from '../core/format';
import { PluginAction, PluginInfo, Telemetry } from '../core/models';
import { scaleRange } from '../core/scaling';
import { Sparkline } from './sparkline';
import { StatusBadge } from './status-badge';

/** One alias of a plugin as its card shows it: `alias minilm · 90 %`. */
export function aliasLabel(a: { name: string; percent: number }): string {
  const percent = Number.isInteger(a.percent) ? a.percent.toString() : a.percent.toFixed(1);
  return `alias ${a.name} · ${percent} %`;
}

/** Which actions a status allows. */
export function allowedActions(p: Pick<PluginInfo, 'status'>): Record<PluginAction, boolean> {
  const s = p.status;
  return {
    start: s === 'stopped' || s === 'error',
    stop: s === 'running' || s === 'starting' || s === 'error',
    restart: s === 'running' || s === 'error',
  };
}

@Component({
  selector: 'app-plugin-card',
  imports: [RouterLink, StatusBadge, Sparkline],
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { class: 'block' },
  template: `
    @let p = plugin();
    <article class="card flex h-full flex-col gap-3" [attr.aria-labelledby]="'plugin-' + p.id" data-testid="plugin-card" [attr.data-plugin]="p.id">
      <header class="flex items-start justify-between gap-2">
        <div class="min-w-0">
          <h2 [id]="'plugin-' + p.id" class="truncate text-base font-semibold">
            <a [routerLink]="['/plugins', p.id]" class="hover:underline">{{ p.name }}</a>
          </h2>
          <p class="text-xs text-slate-600">{{ p.id }} · v{{ p.version || '?' }} · {{ p.implementation }}</p>
        </div>
        <app-status-badge [status]="p.status" />
      </header>
      @if (p.description) {
        <p class="line-clamp-2 text-sm text-slate-700">{{ p.description }}</p>
      }
      <dl class="grid grid-cols-3 gap-x-3 gap-y-2 text-sm">
        <div><dt class="text-xs text-slate-600">CPU</dt><dd class="font-medium tabular-nums" data-testid="cpu">{{ cpu() }}</dd></div>
        <div><dt class="text-xs text-slate-600">Memory</dt><dd class="font-medium tabular-nums">{{ memory() }}</dd></div>
        <div><dt class="text-xs text-slate-600">Uptime</dt><dd class="font-medium tabular-nums">{{ uptime() }}</dd></div>
        <div><dt class="text-xs text-slate-600">Requests</dt><dd class="font-medium tabular-nums" data-testid="requests">{{ requests() }}</dd></div>
        <div><dt class="text-xs text-slate-600">Errors</dt><dd class="font-medium tabular-nums" [class.text-red-700]="(telemetry()?.error_count ?? 0) > 0">{{ errors() }}</dd></div>
        <div>
          <dt class="text-xs text-slate-600">Replicas</dt>
          <dd class="font-medium tabular-nums" data-testid="replicas" [attr.title]="p.ready_replicas + ' ready of ' + p.replicas + ' wanted'">
            {{ p.ready_replicas }}/{{ p.replicas }}@if (range()) {&ngsp;<span class="inline-block text-xs font-normal text-slate-600">· {{ range() }}</span>}
          </dd>
        </div>
        @if (p.resources.gpu_count > 0) {
          <div class="col-span-3"><dt class="sr-only">GPU</dt><dd class="text-xs font-medium text-violet-800">GPU: {{ p.resources.gpu_count }} × {{ p.resources.gpu_vendor || 'any' }}</dd></div>
        }
        @if (p.aliases?.length) {
          <div class="col-span-3">
            <dt class="sr-only">Aliases</dt>
            <dd class="text-xs text-slate-700" data-testid="aliases" title="Names clients may call this plugin by, and its share of each alias's calls">
              @for (a of p.aliases; track a.name) {<span class="mr-2 inline-block">{{ aliasLabel(a) }}</span>}
            </dd>
          </div>
        }
      </dl>
      <div class="text-emerald-600" title="Requests per second, last 10 minutes">
        <span class="sr-only">Requests per second, last 10 minutes</span>
        <app-sparkline class="h-8" [values]="sparkline() ?? []" [label]="'Requests per second of ' + p.name + ', last 10 minutes'" />
      </div>
      @if (p.manifest_error && p.status !== 'error') {
        <div role="status" class="rounded bg-amber-50 p-2 text-xs text-amber-900" data-testid="manifest-error">
          <p class="font-semibold">Running an older version: the manifest has an error</p>
          <p class="line-clamp-3 break-words">{{ p.manifest_error }}</p>
        </div>
      } @else if (p.last_error && p.status === 'error') {
        <p class="line-clamp-3 rounded bg-red-50 p-2 text-xs text-red-900">{{ p.last_error }}</p>
      }
      @if (actionError()) {
        <p role="alert" class="rounded bg-red-50 p-2 text-xs text-red-900" data-testid="action-error">{{ actionError() }}</p>
      }
      <footer class="mt-auto flex flex-wrap gap-2 pt-1">
        @if (canAdmin()) {
          @for (a of actionList; track a) {
            <button
              type="button"
              class="btn"
              [class]="a === 'stop' ? 'btn-danger' : 'btn-secondary'"
              [disabled]="!allowed()[a] || !!busy()"
              [attr.aria-busy]="busy() === a"
              [attr.aria-label]="label(a) + ' ' + p.name"
              (click)="action.emit(a)"
            >
              @if (busy() === a) {<span class="spinner" aria-hidden="true"></span>}
              {{ label(a) }}
            </button>
          }
        }
        <a [routerLink]="['/plugins', p.id]" class="btn btn-secondary ml-auto" [attr.aria-label]="'Details of ' + p.name">Details</a>
      </footer>
    </article>
  `,
})
export class PluginCard {
  readonly plugin = input.required<PluginInfo>();
  readonly telemetry = input<Telemetry | undefined>();
  /** Requests per second over the gateway's history, oldest first. */
  readonly sparkline = input<readonly number[] | undefined>();
  readonly busy = input<PluginAction | undefined>();
  readonly actionError = input<string | undefined>();
  readonly canAdmin = input(false);
  readonly action = output<PluginAction>();

  protected readonly actionList: PluginAction[] = ['start', 'stop', 'restart'];
  protected readonly allowed = computed(() => allowedActions(this.plugin()));
  private readonly live = computed(() => (this.plugin().status === 'running' ? this.telemetry() : undefined));
  protected readonly cpu = computed(() => formatPercent(this.live()?.cpu_percent));
  protected readonly memory = computed(() => formatMemory(this.live()?.memory_mb));
  protected readonly uptime = computed(() => formatUptime(this.live()?.uptime_secs));
  protected readonly requests = computed(() => formatCount(this.telemetry()?.request_count));
  protected readonly errors = computed(() => formatCount(this.telemetry()?.error_count));
  protected readonly range = computed(() => scaleRange(this.plugin()));

  protected readonly aliasLabel = aliasLabel;

  protected label(a: PluginAction): string {
    return a === 'start' ? 'Start' : a === 'stop' ? 'Stop' : 'Restart';
  }
}
