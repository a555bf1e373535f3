import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';

/** A small line of recent values (oldest first), scaled to its own maximum; no axes. */
@Component({
  selector: 'app-sparkline',
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { class: 'block' },
  template: `
    <svg viewBox="0 0 100 24" preserveAspectRatio="none" class="h-full w-full overflow-visible" role="img" [attr.aria-label]="label()" data-testid="sparkline" [attr.data-points]="values().length">
      @if (line(); as l) {
        <polygon [attr.points]="area()" class="fill-current opacity-15" />
        <polyline [attr.points]="l" fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" stroke-linejoin="round" />
      } @else {
        <line x1="0" y1="23" x2="100" y2="23" stroke="currentColor" stroke-width="1" stroke-dasharray="2 2" vector-effect="non-scaling-stroke" class="opacity-40" />
      }
    </svg>
  `,
})
export class Sparkline {
  readonly values = input.required<readonly number[]>();
  readonly label = input('');

  private readonly coords = computed(() => {
    const v = this.values().map((x) => (Number.isFinite(x) ? x : 0));
    if (v.length < 2) return null;
    const max = Math.max(...v) || 1;
    return v.map((y, i) => `${((i / (v.length - 1)) * 100).toFixed(2)},${(23 - (y / max) * 21).toFixed(2)}`);
  });
  protected readonly line = computed(() => this.coords()?.join(' ') ?? null);
  protected readonly area = computed(() => {
    const c = this.coords();
    return c ? `0,24 ${c.join(' ')} 100,24` : '';
  });
}
