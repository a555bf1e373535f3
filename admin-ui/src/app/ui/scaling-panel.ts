import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { formatClock } from '../core/format';
import { PluginInfo } from '../core/models';
import { newestFirst, ownerText, scaleFigures } from '../core/scaling';

/**
 * The plugin page's Scaling section: who owns the replica count, min / current / wanted / max as
 * figures and a gauge, and the latest changes of the count. Everything is computed from the
 * `plugin` input, so a status push that replaces the plugin in the store redraws it.
 */
@Component({
  selector: 'app-scaling-panel',
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { class: 'block' },
  template: `
    @let p = plugin();
    @let f = figures();
    <p class="mb-3 text-sm text-slate-600">Owner: <span class="font-medium text-slate-900" data-testid="scaling-owner">{{ owner() }}</span></p>
    <dl class="mb-3 grid grid-cols-2 gap-2 text-sm sm:grid-cols-4">
      <div class="card p-2"><dt class="text-xs text-slate-600">Min</dt><dd class="font-semibold tabular-nums" data-testid="scale-min">{{ f.min ?? '—' }}</dd></div>
      <div class="card p-2">
        <dt class="text-xs text-slate-600">Current</dt>
        <dd class="font-semibold tabular-nums" data-testid="scale-current">{{ f.current }} <span class="text-xs font-normal text-slate-600">({{ f.ready }} ready)</span></dd>
      </div>
      <div class="card p-2"><dt class="text-xs text-slate-600">Wanted</dt><dd class="font-semibold tabular-nums" data-testid="scale-wanted">{{ f.wanted }}</dd></div>
      <div class="card p-2"><dt class="text-xs text-slate-600">Max</dt><dd class="font-semibold tabular-nums" data-testid="scale-max">{{ f.max ?? '—' }}</dd></div>
    </dl>
    <div
      role="meter"
      aria-label="Replicas"
      [attr.aria-valuemin]="0"
      [attr.aria-valuemax]="f.scale"
      [attr.aria-valuenow]="f.current"
      [attr.aria-valuetext]="valueText()"
      class="relative h-4 w-full overflow-hidden rounded border border-slate-300 bg-slate-100"
      data-testid="scale-gauge"
    >
      @if (f.min !== undefined && f.max !== undefined) {
        <div class="absolute inset-y-0 bg-blue-100" [style.left.%]="pct(f.min)" [style.width.%]="pct(f.max) - pct(f.min)"></div>
      }
      <div class="absolute inset-y-0 left-0 bg-emerald-300" [style.width.%]="pct(f.current)"></div>
      <div class="absolute inset-y-0 left-0 bg-emerald-600" [style.width.%]="pct(f.ready)"></div>
      <div class="absolute inset-y-0 w-0.5 bg-slate-900" [style.left]="'calc(' + pct(f.wanted) + '% - 1px)'" data-testid="scale-wanted-mark"></div>
    </div>
    <ul class="mt-1 flex flex-wrap gap-x-3 text-xs text-slate-600" aria-hidden="true">
      <li><span class="mr-1 inline-block h-2 w-3 bg-emerald-600"></span>ready</li>
      <li><span class="mr-1 inline-block h-2 w-3 bg-emerald-300"></span>starting or not ready</li>
      <li><span class="mr-1 inline-block h-2 w-0.5 bg-slate-900"></span>wanted</li>
      @if (p.scaling) {<li><span class="mr-1 inline-block h-2 w-3 bg-blue-100"></span>min–max</li>}
    </ul>
    @if (p.scaling; as s) {
      <ul class="mt-2 space-y-0.5 text-sm text-slate-700" data-testid="scaling-notes">
        @if (s.min_replicas === 0) {<li>Scales to zero after {{ s.scale_to_zero_after_seconds }} s idle.</li>}
        <li>Waits {{ s.scale_down_delay_seconds }} s of lower load before scaling down.</li>
      </ul>
    }
    <h3 id="scale-history-title" class="mt-4 mb-1 text-sm font-semibold">Recent changes</h3>
    <ol class="space-y-1 text-sm" aria-labelledby="scale-history-title" data-testid="scale-history">
      @for (e of history(); track $index) {
        <li class="flex flex-wrap items-baseline gap-x-2 border-l-2 pl-2" [class]="e.to > e.from ? 'border-emerald-500' : 'border-amber-500'" data-testid="scale-event">
          <time class="tabular-nums text-xs text-slate-600" [attr.datetime]="e.time" [title]="e.time">{{ clock(e.time) }}</time>
          <span class="font-semibold tabular-nums">{{ e.from }} → {{ e.to }}</span>
          <span class="text-slate-700">{{ e.reason }}</span>
        </li>
      } @empty {
        <li class="text-slate-600">No change of the replica count yet.</li>
      }
    </ol>
  `,
})
export class ScalingPanel {
  readonly plugin = input.required<PluginInfo>();

  protected readonly owner = computed(() => ownerText(this.plugin()));
  protected readonly figures = computed(() => scaleFigures(this.plugin()));
  protected readonly history = computed(() => newestFirst(this.plugin().scale_history));
  protected readonly valueText = computed(() => {
    const f = this.figures();
    const range = f.min !== undefined ? `, autoscaled between ${f.min} and ${f.max}` : '';
    return `${f.current} current (${f.ready} ready), ${f.wanted} wanted${range}`;
  });

  protected pct(n: number): number {
    return (100 * n) / this.figures().scale;
  }

  protected clock(iso: string): string {
    return formatClock(iso);
  }
}
