import {
  ChangeDetectionStrategy,
  Component,
  ElementRef,
  OnDestroy,
  OnInit,
  afterRenderEffect,
  inject,
  input,
  signal,
  viewChild,
} from '@angular/core';
import { describeError } from '../core/api-error';
import { ApiService } from '../core/api.service';
import { LiveState } from '../core/live-socket';
import { LiveService } from '../core/live.service';
import { LogLine } from '../core/models';

const MAX_LINES = 1000;
const FALLBACK_POLL_MS = 3000;

const lineKey = (l: LogLine) => `${l.ts}\u0000${l.stream}\u0000${l.message}`;

/** Merges new lines into a tail, dropping ones already there and keeping the last MAX_LINES. */
export function mergeLines(current: readonly LogLine[], incoming: readonly LogLine[], max = MAX_LINES): LogLine[] {
  const seen = new Set(current.slice(-incoming.length - 50).map(lineKey));
  const fresh = incoming.filter((l) => {
    const k = lineKey(l);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  if (!fresh.length) return current as LogLine[];
  const out = current.concat(fresh);
  return out.length > max ? out.slice(out.length - max) : out;
}

@Component({
  selector: 'app-log-tail',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="mb-2 flex flex-wrap items-center gap-2">
      <button type="button" class="btn btn-secondary" [attr.aria-pressed]="paused()" (click)="togglePause()" data-testid="log-pause">
        {{ paused() ? 'Resume' : 'Pause' }}
        @if (paused() && pending().length) {
          <span class="rounded-full bg-blue-100 px-1.5 text-xs text-blue-900">+{{ pending().length }}</span>
        }
      </button>
      <label class="flex items-center gap-1.5 text-sm">
        <input type="checkbox" [checked]="follow()" (change)="follow.set(!follow())" /> Follow
      </label>
      <button type="button" class="btn btn-secondary" (click)="lines.set([])">Clear</button>
      <span class="ml-auto text-xs text-slate-700" role="status">
        {{ state() === 'open' ? 'Streaming' : state() === 'connecting' ? 'Connecting…' : 'Stream down, polling' }} · {{ lines().length }} lines
      </span>
    </div>
    @if (error()) {
      <p role="alert" class="mb-2 text-sm text-red-800">{{ error() }}</p>
    }
    <div
      #box
      class="terminal h-72 overflow-auto rounded-md bg-slate-950 p-2 font-mono text-xs leading-5 text-slate-100"
      role="log"
      aria-label="Plugin log"
      aria-live="off"
      tabindex="0"
      data-testid="log-box"
      (scroll)="onScroll()"
    >
      @for (l of lines(); track $index) {
        <div class="whitespace-pre-wrap break-all" data-testid="log-line">
          <span class="text-slate-400">{{ time(l.ts) }}</span>
          <span [class]="l.stream === 'stderr' ? 'text-amber-300' : l.stream === 'supervisor' ? 'text-sky-300' : 'text-emerald-300'"> {{ l.stream }}</span>
          {{ l.message }}
        </div>
      } @empty {
        <p class="text-slate-400">No log lines yet.</p>
      }
    </div>
  `,
})
export class LogTail implements OnInit, OnDestroy {
  readonly pluginId = input.required<string>();
  private readonly api = inject(ApiService);
  private readonly live = inject(LiveService);
  private readonly box = viewChild.required<ElementRef<HTMLElement>>('box');

  protected readonly lines = signal<LogLine[]>([]);
  protected readonly pending = signal<LogLine[]>([]);
  protected readonly paused = signal(false);
  protected readonly follow = signal(true);
  protected readonly state = signal<LiveState>('connecting');
  protected readonly error = signal<string | null>(null);
  private stopStream: (() => void) | null = null;
  private poll: ReturnType<typeof setInterval> | null = null;

  constructor() {
    afterRenderEffect(() => {
      this.lines();
      if (this.follow()) {
        const el = this.box().nativeElement;
        el.scrollTop = el.scrollHeight;
      }
    });
  }

  ngOnInit(): void {
    void this.fetch();
    this.stopStream = this.live.watchLogs(
      this.pluginId(),
      (line) => this.add([line]),
      (state) => {
        this.state.set(state);
        if (state === 'open') {
          this.stopPolling();
          void this.fetch(); // lines written while the stream was down
        } else if (state === 'closed' && !this.poll) {
          this.poll = setInterval(() => void this.fetch(), FALLBACK_POLL_MS);
        }
      },
    );
  }

  ngOnDestroy(): void {
    this.stopStream?.();
    this.stopPolling();
  }

  private stopPolling(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  private async fetch(): Promise<void> {
    try {
      const logs = await this.api.logs(this.pluginId(), 200);
      this.add(logs.lines);
      this.error.set(null);
    } catch (e) {
      this.error.set(`Could not read logs: ${describeError(e)}`);
    }
  }

  private add(incoming: LogLine[]): void {
    if (this.paused()) this.pending.update((p) => mergeLines(p, incoming));
    else this.lines.update((l) => mergeLines(l, incoming));
  }

  protected togglePause(): void {
    if (this.paused()) {
      const pending = this.pending();
      this.pending.set([]);
      this.paused.set(false);
      this.lines.update((l) => mergeLines(l, pending));
    } else {
      this.paused.set(true);
    }
  }

  protected onScroll(): void {
    const el = this.box().nativeElement;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
    if (!atBottom && this.follow()) this.follow.set(false);
    else if (atBottom && !this.follow()) this.follow.set(true);
  }

  protected time(ts: string): string {
    const d = new Date(ts);
    return Number.isNaN(d.getTime()) ? ts : d.toISOString().slice(11, 23);
  }
}
