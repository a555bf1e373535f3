import {
  ChangeDetectionStrategy,
  Component,
  DestroyRef,
  ElementRef,
  WritableSignal,
  afterRenderEffect,
  computed,
  effect,
  inject,
  input,
  signal,
  untracked,
  viewChild,
} from '@angular/core';
import { ApiService } from '../core/api.service';
import { ChatMessage, EMPTY_SAMPLING, SamplingForm, TokenUsage, chatRequest, isAbort, parseSampling } from '../core/chat';

/** One answer as it streams in. Every number is one the gateway sent or the browser measured. */
interface Answer {
  content: string;
  state: 'streaming' | 'done' | 'stopped' | 'error';
  error?: string;
  finish?: string;
  usage?: TokenUsage;
  /** From Send to the first content delta, measured here. */
  ttftMs?: number;
  /** Completion tokens after the first, over the time from the first delta to the last (needs usage). */
  tokensPerSecond?: number;
}

interface Turn {
  id: number;
  user: string;
  answer: WritableSignal<Answer>;
}

/**
 * The playground's chat mode for a plugin with a `chat` capability: `POST /v1/chat/completions`
 * streamed, the answer growing as its tokens arrive, then its usage, finish reason and speed.
 */
@Component({
  selector: 'app-chat-panel',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="grid grid-cols-1 gap-6 lg:grid-cols-3">
      <section class="card flex flex-col gap-3 lg:col-span-2" aria-labelledby="chat-title">
        <div class="flex items-center justify-between gap-2">
          <h2 id="chat-title" class="section-title">Chat with {{ pluginName() || plugin() }}</h2>
          <button type="button" class="btn text-sm" (click)="clear()" [disabled]="!turns().length" data-testid="chat-clear">Clear conversation</button>
        </div>
        <ol #log class="max-h-[32rem] min-h-40 space-y-3 overflow-auto" role="log" aria-live="polite" aria-label="Conversation" [attr.aria-busy]="streaming()" data-testid="chat-log">
          @for (t of turns(); track t.id) {
            <li class="flex justify-end">
              <div class="max-w-[85%] rounded-lg bg-blue-50 px-3 py-2 text-sm whitespace-pre-wrap text-blue-950" data-testid="chat-user">
                <span class="sr-only">You: </span>{{ t.user }}
              </div>
            </li>
            @let a = t.answer();
            <li class="flex flex-col items-start gap-1" data-testid="chat-turn" [attr.data-state]="a.state">
              @if (a.content || a.state === 'streaming' || a.state === 'done') {
                <div class="max-w-[85%] rounded-lg border border-slate-200 bg-slate-50 px-3 py-2 text-sm whitespace-pre-wrap text-slate-900" data-testid="chat-answer">
                  <span class="sr-only">Assistant: </span><span data-testid="chat-text">{{ a.content }}</span>@if (a.state === 'streaming') {<span class="spinner ml-1 align-middle" aria-hidden="true"></span>}
                  @if (a.state === 'done' && !a.content) {<span class="text-slate-600 italic">(empty answer)</span>}
                </div>
              }
              @if (a.error) {
                <p role="alert" class="text-sm text-red-800" data-testid="chat-error">{{ a.error }}</p>
              }
              @if (a.state !== 'streaming') {
                <p class="text-xs text-slate-600" data-testid="chat-stats">
                  @for (part of stats(a); track part.id) {@if (!$first) {<span aria-hidden="true"> · </span>}<span [attr.data-testid]="part.id" [attr.title]="part.title">{{ part.text }}</span>}
                </p>
              }
            </li>
          } @empty {
            <li class="text-sm text-slate-700">Send a message to start the conversation.</li>
          }
        </ol>
        <form class="space-y-2" (submit)="$event.preventDefault(); send()">
          <label for="chat-input" class="label">Message</label>
          <textarea id="chat-input" class="input h-20" [value]="draft()" (input)="draft.set($any($event.target).value)" (keydown.enter)="onEnter($any($event))" placeholder="Enter sends, Shift+Enter adds a line" data-testid="chat-input"></textarea>
          @if (inputError()) {
            <p role="alert" class="text-sm text-red-800">{{ inputError() }}</p>
          }
          <div class="flex gap-2">
            <button type="submit" class="btn btn-primary" [disabled]="streaming() || !canSend() || !draft().trim()" data-testid="chat-send">Send</button>
            <button type="button" class="btn" [disabled]="!streaming()" (click)="stop()" data-testid="chat-stop">Stop</button>
          </div>
          @if (!canSend()) {
            <p class="text-sm text-slate-700">Your key may not invoke this capability.</p>
          }
        </form>
      </section>

      <section class="card space-y-3" aria-labelledby="chat-settings-title">
        <h2 id="chat-settings-title" class="section-title">Settings</h2>
        <div>
          <label for="chat-system" class="label">System prompt (optional)</label>
          <textarea id="chat-system" class="input h-24" [value]="system()" (input)="system.set($any($event.target).value)" data-testid="chat-system"></textarea>
        </div>
        <fieldset class="space-y-2">
          <legend class="label">Sampling (empty: the plugin's default)</legend>
          <div class="grid grid-cols-2 gap-3">
            <div>
              <label for="chat-temperature" class="label">temperature</label>
              <input id="chat-temperature" type="number" step="0.1" min="0" max="2" class="input" [value]="sampling().temperature" (input)="setParam('temperature', $any($event.target).value)" data-testid="chat-temperature" />
            </div>
            <div>
              <label for="chat-top-p" class="label">top_p</label>
              <input id="chat-top-p" type="number" step="0.05" min="0" max="1" class="input" [value]="sampling().top_p" (input)="setParam('top_p', $any($event.target).value)" data-testid="chat-top-p" />
            </div>
            <div>
              <label for="chat-max-tokens" class="label">max_tokens</label>
              <input id="chat-max-tokens" type="number" step="1" min="1" class="input" [value]="sampling().max_tokens" (input)="setParam('max_tokens', $any($event.target).value)" data-testid="chat-max-tokens" />
            </div>
            <div>
              <label for="chat-seed" class="label">seed</label>
              <input id="chat-seed" type="number" step="1" class="input" [value]="sampling().seed" (input)="setParam('seed', $any($event.target).value)" data-testid="chat-seed" />
            </div>
          </div>
          <div>
            <label for="chat-stop-seqs" class="label">stop (one sequence per line, up to 4)</label>
            <textarea id="chat-stop-seqs" class="input h-16 font-mono text-xs" spellcheck="false" [value]="sampling().stop" (input)="setParam('stop', $any($event.target).value)" data-testid="chat-stop-seqs"></textarea>
          </div>
        </fieldset>
      </section>
    </div>
  `,
})
export class ChatPanel {
  /** The plugin id: the request's `model`. */
  readonly plugin = input.required<string>();
  readonly pluginName = input<string>('');
  readonly canSend = input(true);

  private readonly api = inject(ApiService);
  private readonly logEl = viewChild<ElementRef<HTMLElement>>('log');

  protected readonly turns = signal<Turn[]>([]);
  protected readonly draft = signal('');
  protected readonly system = signal('');
  protected readonly sampling = signal<SamplingForm>({ ...EMPTY_SAMPLING });
  protected readonly inputError = signal<string | null>(null);
  protected readonly streaming = computed(() => this.turns().some((t) => t.answer().state === 'streaming'));

  private controller: AbortController | null = null;
  private nextId = 1;

  constructor() {
    // Another plugin: a new conversation (the old one's model is not this one).
    effect(() => {
      this.plugin();
      untracked(() => this.clear());
    });
    // Keep the newest text in view while it streams.
    afterRenderEffect(() => {
      for (const t of this.turns()) t.answer();
      const el = this.logEl()?.nativeElement;
      if (el) el.scrollTop = el.scrollHeight;
    });
    inject(DestroyRef).onDestroy(() => this.controller?.abort());
  }

  protected setParam(name: keyof SamplingForm, value: string): void {
    this.sampling.update((s) => ({ ...s, [name]: value }));
  }

  protected onEnter(event: KeyboardEvent): void {
    if (event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (!this.streaming() && this.canSend() && this.draft().trim()) void this.send();
  }

  protected ms(ms: number): string {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  /** The answer's facts, each only when the stream carried it or the browser measured it. */
  protected stats(a: Answer): { id: string; text: string; title?: string }[] {
    const out: { id: string; text: string; title?: string }[] = [];
    if (a.usage) out.push({ id: 'chat-usage', text: `${a.usage.prompt_tokens} prompt + ${a.usage.completion_tokens} completion tokens` });
    else if (a.state === 'done') out.push({ id: 'chat-no-usage', text: 'usage not reported' });
    if (a.finish) out.push({ id: 'chat-finish', text: `finish: ${a.finish}` });
    if (a.state === 'stopped') out.push({ id: 'chat-stopped', text: 'stopped' });
    if (a.ttftMs !== undefined) out.push({ id: 'chat-ttft', text: `first token ${this.ms(a.ttftMs)}`, title: 'From Send to the first token, measured in this browser' });
    if (a.tokensPerSecond !== undefined) {
      out.push({ id: 'chat-tps', text: `${a.tokensPerSecond.toFixed(1)} tokens/s`, title: 'Completion tokens after the first, over the time from the first token to the last' });
    }
    if (!a.content && a.state !== 'done') out.push({ id: 'chat-not-resent', text: 'not sent with the next message' });
    return out;
  }

  /** The conversation as the model sees it: earlier turns with an answer, then the new message. */
  private messages(user: string): ChatMessage[] {
    const out: ChatMessage[] = [];
    if (this.system().trim()) out.push({ role: 'system', content: this.system() });
    for (const t of this.turns()) {
      const a = t.answer();
      if (!a.content) continue;
      out.push({ role: 'user', content: t.user }, { role: 'assistant', content: a.content });
    }
    out.push({ role: 'user', content: user });
    return out;
  }

  async send(): Promise<void> {
    const user = this.draft().trim();
    if (!user || this.streaming()) return;
    const parsed = parseSampling(this.sampling());
    if ('error' in parsed) {
      this.inputError.set(parsed.error);
      return;
    }
    this.inputError.set(null);
    const request = chatRequest(this.plugin(), this.messages(user), parsed.params);
    const answer = signal<Answer>({ content: '', state: 'streaming' });
    this.turns.update((ts) => [...ts, { id: this.nextId++, user, answer }]);
    this.draft.set('');

    const controller = new AbortController();
    this.controller = controller;
    const sent = performance.now();
    let first: number | undefined;
    let last: number | undefined;
    try {
      for await (const event of this.api.chat(request, controller.signal)) {
        switch (event.kind) {
          case 'delta': {
            const now = performance.now();
            first ??= now;
            last = now;
            answer.update((a) => ({ ...a, content: a.content + event.content, ttftMs: first! - sent }));
            break;
          }
          case 'finish':
            answer.update((a) => ({ ...a, finish: event.reason }));
            break;
          case 'usage':
            answer.update((a) => ({ ...a, usage: event.usage }));
            break;
          case 'done':
            break;
        }
      }
      answer.update((a) => ({ ...a, state: 'done', tokensPerSecond: rate(a.usage, first, last) }));
    } catch (e) {
      if (isAbort(e)) answer.update((a) => ({ ...a, state: 'stopped' }));
      else answer.update((a) => ({ ...a, state: 'error', error: e instanceof Error ? e.message : String(e) }));
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  stop(): void {
    this.controller?.abort();
  }

  clear(): void {
    this.stop();
    this.turns.set([]);
    this.inputError.set(null);
  }
}

/**
 * Below this span the deltas came in one network read or so (a fast model, a buffering proxy): their
 * arrival times say nothing about decoding speed, so no rate is shown.
 */
const MIN_RATE_SPAN_MS = 50;

/** Decoding speed: the tokens after the first over the time they took; unknown without usage or a measurable span. */
function rate(usage: TokenUsage | undefined, first: number | undefined, last: number | undefined): number | undefined {
  if (!usage || first === undefined || last === undefined || last - first < MIN_RATE_SPAN_MS || usage.completion_tokens < 2) return undefined;
  return (usage.completion_tokens - 1) / ((last - first) / 1000);
}
