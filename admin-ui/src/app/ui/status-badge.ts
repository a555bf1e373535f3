import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { PluginStatus } from '../core/models';

const STYLES: Record<PluginStatus, string> = {
  running: 'bg-emerald-100 text-emerald-900 border-emerald-300',
  starting: 'bg-sky-100 text-sky-900 border-sky-300',
  stopping: 'bg-amber-100 text-amber-900 border-amber-300',
  stopped: 'bg-slate-100 text-slate-800 border-slate-300',
  error: 'bg-red-100 text-red-900 border-red-300',
};

@Component({
  selector: 'app-status-badge',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `<span
    class="inline-flex items-center gap-1 rounded-full border px-2 py-0.5 text-xs font-semibold"
    [class]="style()"
    data-testid="status-badge"
    [attr.data-status]="status()"
    >@if (status() === 'starting' || status() === 'stopping') {<span class="spinner h-2.5 w-2.5" aria-hidden="true"></span>}{{ status() }}</span
  >`,
})
export class StatusBadge {
  readonly status = input.required<PluginStatus>();
  protected readonly style = computed(() => STYLES[this.status()] ?? STYLES.stopped);
}
