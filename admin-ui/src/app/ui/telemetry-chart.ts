import {
  AfterViewInit,
  ChangeDetectionStrategy,
  Component,
  ElementRef,
  OnDestroy,
  computed,
  effect,
  input,
  viewChild,
} from '@angular/core';
import { Chart, Filler, LineController, LineElement, LinearScale, PointElement, Tooltip } from 'chart.js';
import { Sample } from '../core/plugins.store';

Chart.register(LineController, LineElement, PointElement, LinearScale, Filler, Tooltip);

export type Metric = 'cpu' | 'memory' | 'rps' | 'eps' | 'p99';

const META: Record<Metric, { title: string; unit: string; color: string }> = {
  cpu: { title: 'CPU', unit: '%', color: '#1d4ed8' },
  memory: { title: 'Memory', unit: 'MiB', color: '#7c3aed' },
  rps: { title: 'Requests', unit: 'req/s', color: '#047857' },
  eps: { title: 'Errors', unit: 'err/s', color: '#b91c1c' },
  p99: { title: 'Latency p99', unit: 'ms', color: '#c2410c' },
};

/** Axis colours readable on the page's background in either colour scheme. */
function axisColors(): { ticks: string; grid: string } {
  const dark = typeof matchMedia === 'function' && matchMedia('(prefers-color-scheme: dark)').matches;
  return dark ? { ticks: '#cbd5e1', grid: '#334155' } : { ticks: '#334155', grid: '#e2e8f0' };
}

/** One telemetry series over the kept history, x = seconds before the newest sample. */
@Component({
  selector: 'app-telemetry-chart',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <figure class="card p-3">
      <figcaption class="mb-1 flex items-baseline justify-between text-sm">
        <span class="font-semibold">{{ meta().title }}</span>
        <span class="tabular-nums text-slate-700">{{ latest() }}</span>
      </figcaption>
      <div class="relative h-32" [attr.data-points]="points().length" [attr.data-span-s]="span()" data-testid="chart">
        <canvas #canvas role="img" [attr.aria-label]="ariaLabel()"></canvas>
      </div>
    </figure>
  `,
})
export class TelemetryChart implements AfterViewInit, OnDestroy {
  readonly samples = input.required<Sample[]>();
  readonly metric = input.required<Metric>();
  private readonly canvas = viewChild.required<ElementRef<HTMLCanvasElement>>('canvas');
  private chart: Chart<'line', { x: number; y: number | null }[]> | null = null;

  protected readonly meta = computed(() => META[this.metric()]);
  protected readonly points = computed(() => {
    const s = this.samples();
    const last = s.at(-1)?.t ?? 0;
    const m = this.metric();
    return s.map((x) => {
      const v = x[m];
      // A gap, not a zero, where a sample has no value (latency without calls, live points).
      return { x: (x.t - last) / 1000, y: v == null || !Number.isFinite(v) ? null : +v.toFixed(3) };
    });
  });
  /** Seconds from the oldest point to the newest. */
  protected readonly span = computed(() => Math.round(-(this.points()[0]?.x ?? 0)));
  protected readonly latest = computed(() => {
    const p = [...this.points()].reverse().find((x) => x.y != null);
    return p && p.y != null ? `${p.y.toFixed(p.y < 10 ? 2 : 0)} ${this.meta().unit}` : 'no data yet';
  });
  protected readonly ariaLabel = computed(
    () => `${this.meta().title} over the last ${Math.round(-(this.points()[0]?.x ?? 0))} seconds, latest ${this.latest()}`,
  );

  constructor() {
    effect(() => {
      const points = this.points();
      if (!this.chart) return;
      this.chart.data.datasets[0].data = points;
      this.chart.update('none');
    });
  }

  ngAfterViewInit(): void {
    const meta = this.meta();
    const axis = axisColors();
    this.chart = new Chart(this.canvas().nativeElement, {
      type: 'line',
      data: {
        datasets: [
          {
            label: `${meta.title} (${meta.unit})`,
            data: this.points(),
            borderColor: meta.color,
            backgroundColor: meta.color + '22',
            fill: true,
            pointRadius: 0,
            borderWidth: 2,
            tension: 0.2,
            // Latency has no value between calls: join the samples that have one.
            spanGaps: this.metric() === 'p99',
          },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: 'nearest', intersect: false },
        plugins: { legend: { display: false }, tooltip: { enabled: true } },
        scales: {
          x: {
            type: 'linear',
            grid: { color: axis.grid },
            ticks: { callback: (v) => ago(Number(v)), maxTicksLimit: 6, color: axis.ticks },
          },
          y: { type: 'linear', beginAtZero: true, grid: { color: axis.grid }, ticks: { maxTicksLimit: 4, color: axis.ticks } },
        },
      },
    });
  }

  ngOnDestroy(): void {
    this.chart?.destroy();
    this.chart = null;
  }
}

/** An x tick (seconds before the newest sample, ≤ 0) as a readable offset: "now", "-30s", "-5m". */
export function ago(secs: number): string {
  const s = Math.round(-secs);
  if (s <= 0) return 'now';
  if (s < 120) return `-${s}s`;
  return `-${Math.round(s / 60)}m`;
}
