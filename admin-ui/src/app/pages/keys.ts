import { ChangeDetectionStrategy, Component, OnInit, inject, signal } from '@angular/core';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { formatCount } from '../core/format';
import { CreatedKey, KeyInfo } from '../core/models';
import { ProblemView } from '../ui/problem-view';

/** The scopes offered as checkboxes; narrower ones (invoke:<plugin>, manage:<plugin>) go in the text field. */
const COMMON_SCOPES = ['read', 'invoke', 'admin'] as const;

/** `GET/POST/DELETE /api/keys`: every key (never its secret), a new key shown once, revoke. */
@Component({
  selector: 'app-keys',
  imports: [ProblemView],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <h1 class="mb-4 text-2xl font-bold">API keys</h1>
    <div class="grid grid-cols-1 gap-6 lg:grid-cols-3">
      <section class="card lg:col-span-2" aria-labelledby="keys-title">
        <h2 id="keys-title" class="section-title">Keys</h2>
        @if (listError()) {
          <app-problem [error]="listError()" />
        }
        <div class="overflow-x-auto">
          <table class="w-full text-left text-sm" data-testid="keys-table">
            <thead>
              <tr class="border-b border-slate-200 text-slate-700">
                <th scope="col" class="py-1.5 pr-3">Id</th>
                <th scope="col" class="py-1.5 pr-3">Scopes</th>
                <th scope="col" class="py-1.5 pr-3">Created</th>
                <th scope="col" class="py-1.5 pr-3">Last used</th>
                <th scope="col" class="py-1.5 pr-3">Expires</th>
                <th scope="col" class="py-1.5 pr-3">Tokens used</th>
                <th scope="col" class="py-1.5 pr-3">Token limit</th>
                <th scope="col" class="py-1.5"><span class="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              @for (k of keys(); track k.id) {
                <tr class="border-b border-slate-100 align-top" data-testid="key-row" [attr.data-key]="k.id">
                  <td class="py-1.5 pr-3 font-mono">
                    {{ k.id }}
                    @if (k.id === auth.keyId()) {<span class="ml-1 rounded bg-blue-50 px-1 text-xs text-blue-900">this session</span>}
                    @if (k.source === 'env') {<span class="ml-1 rounded bg-slate-100 px-1 text-xs text-slate-700" title="From BKG_API_KEY">env</span>}
                    @if (k.description) {<div class="font-sans text-xs text-slate-600">{{ k.description }}</div>}
                  </td>
                  <td class="py-1.5 pr-3 font-mono text-xs">{{ k.scopes.join(', ') }}</td>
                  <td class="py-1.5 pr-3">{{ when(k.created_at) }}</td>
                  <td class="py-1.5 pr-3" data-testid="key-last-used">{{ when(k.last_used_at) || 'never' }}</td>
                  <td class="py-1.5 pr-3">
                    @if (k.expired) {<span class="font-semibold text-red-800">expired</span> }
                    {{ when(k.expires_at) || 'never' }}
                  </td>
                  <td class="py-1.5 pr-3 tabular-nums" data-testid="key-usage">
                    @if (k.usage; as u) {
                      <span class="block">{{ count(u.prompt_tokens) }} prompt</span> <span class="block">{{ count(u.completion_tokens) }} completion</span>
                    } @else {
                      <span class="text-slate-600">not reported</span>
                    }
                  </td>
                  <td class="py-1.5 pr-3 tabular-nums" data-testid="key-tpm">
                    @if (k.tokens_per_minute != null) {{{ count(k.tokens_per_minute) }}/min} @else {none}
                  </td>
                  <td class="py-1.5 text-right whitespace-nowrap">
                    @if (confirming() === k.id) {
                      <span class="mr-2" role="status">Revoke {{ k.id }}?</span>
                      <button type="button" class="btn btn-danger" (click)="revoke(k.id)" [disabled]="busy()" data-testid="key-revoke-confirm">Yes, revoke</button>
                      <button type="button" class="btn ml-1" (click)="confirming.set(null)">Cancel</button>
                    } @else if (k.source === 'file' && k.id !== auth.keyId()) {
                      <button type="button" class="btn" (click)="confirming.set(k.id)" [attr.aria-label]="'Revoke ' + k.id" data-testid="key-revoke">Revoke</button>
                    }
                  </td>
                </tr>
              } @empty {
                <tr><td colspan="8" class="py-2 text-slate-700">No keys.</td></tr>
              }
            </tbody>
          </table>
        </div>
        @if (revokeError()) {
          <app-problem [error]="revokeError()" />
        }
      </section>

      <section class="card space-y-3" aria-labelledby="new-key-title">
        <h2 id="new-key-title" class="section-title">New key</h2>
        <form class="space-y-3" (submit)="$event.preventDefault(); create()">
          <div>
            <label for="key-id" class="label">Id</label>
            <input id="key-id" class="input" required pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" [value]="id()" (input)="id.set($any($event.target).value)" data-testid="key-id" />
            <p class="mt-0.5 text-xs text-slate-600">Shown in logs and metrics: letters, digits, . _ -</p>
          </div>
          <fieldset>
            <legend class="label">Scopes</legend>
            <div class="flex flex-wrap gap-4 text-sm">
              @for (s of common; track s) {
                <label class="flex items-center gap-1.5"><input type="checkbox" [checked]="picked().includes(s)" (change)="toggle(s, $any($event.target).checked)" [attr.data-testid]="'key-scope-' + s" /> {{ s }}</label>
              }
            </div>
            <label for="key-more-scopes" class="label mt-2">More scopes</label>
            <input id="key-more-scopes" class="input font-mono" placeholder="invoke:echo, manage:candle" [value]="more()" (input)="more.set($any($event.target).value)" />
            <p class="mt-0.5 text-xs text-slate-600">Comma-separated: invoke:&lt;plugin&gt;[/&lt;capability&gt;], manage:&lt;plugin&gt;</p>
          </fieldset>
          <div>
            <label for="key-expires" class="label">Expires (optional, your time zone)</label>
            <input id="key-expires" type="datetime-local" class="input" [value]="expires()" (input)="expires.set($any($event.target).value)" data-testid="key-expires" />
          </div>
          <div>
            <label for="key-tpm" class="label">Tokens per minute (optional)</label>
            <input id="key-tpm" type="number" min="1" step="1" class="input" [value]="tpm()" (input)="tpm.set($any($event.target).value)" data-testid="key-tpm-input" />
            <p class="mt-0.5 text-xs text-slate-600">Prompt plus completion tokens this key may use per minute; beyond that, calls are refused (429) until the minute allows more. Empty: no limit.</p>
          </div>
          <div>
            <label for="key-description" class="label">Description (optional)</label>
            <input id="key-description" class="input" maxlength="200" [value]="description()" (input)="description.set($any($event.target).value)" />
          </div>
          <button type="submit" class="btn btn-primary" [disabled]="busy()" data-testid="key-create">Create key</button>
        </form>
        @if (createError()) {
          <app-problem [error]="createError()" />
        }
        @if (created(); as c) {
          <div class="space-y-2 rounded-md border border-emerald-300 bg-emerald-50 p-3 text-sm" role="status" data-testid="key-created">
            <p class="font-semibold text-emerald-900">Key {{ c.id }} created. Copy it now: it is not shown again.</p>
            <label for="key-secret" class="sr-only">The new key</label>
            <input id="key-secret" class="input font-mono text-xs" readonly [value]="c.key" (focus)="$any($event.target).select()" data-testid="key-secret" />
            <div class="flex items-center gap-2">
              <button type="button" class="btn" (click)="copy(c.key)" data-testid="key-copy">Copy</button>
              <button type="button" class="btn" (click)="created.set(null)">Done</button>
              @if (copied()) {<span class="text-emerald-900">{{ copied() }}</span>}
            </div>
          </div>
        }
      </section>
    </div>
  `,
})
export class KeysPage implements OnInit {
  protected readonly auth = inject(AuthStore);
  private readonly api = inject(ApiService);

  protected readonly common = COMMON_SCOPES;
  protected readonly keys = signal<KeyInfo[]>([]);
  protected readonly listError = signal<unknown>(null);
  protected readonly createError = signal<unknown>(null);
  protected readonly revokeError = signal<unknown>(null);
  protected readonly busy = signal(false);
  protected readonly confirming = signal<string | null>(null);
  protected readonly created = signal<CreatedKey | null>(null);
  protected readonly copied = signal('');

  protected readonly id = signal('');
  protected readonly picked = signal<string[]>(['read']);
  protected readonly more = signal('');
  protected readonly expires = signal('');
  protected readonly description = signal('');
  protected readonly tpm = signal('');
  protected readonly count = formatCount;

  async ngOnInit(): Promise<void> {
    await this.refresh();
  }

  private async refresh(): Promise<void> {
    try {
      this.keys.set(await this.api.keys());
      this.listError.set(null);
    } catch (e) {
      this.listError.set(e);
    }
  }

  protected when(iso: string | null | undefined): string {
    if (!iso) return '';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  protected toggle(scope: string, on: boolean): void {
    this.picked.update((p) => (on ? [...p.filter((s) => s !== scope), scope] : p.filter((s) => s !== scope)));
  }

  protected async create(): Promise<void> {
    const scopes = [
      ...this.picked(),
      ...this.more()
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    ];
    let expires_at: string | undefined;
    if (this.expires()) {
      const at = new Date(this.expires());
      if (Number.isNaN(at.getTime())) {
        this.createError.set(new Error('The expiry is not a valid time.'));
        return;
      }
      expires_at = at.toISOString();
    }
    let tokens_per_minute: number | undefined;
    if (this.tpm().trim()) {
      tokens_per_minute = Number(this.tpm());
      if (!Number.isInteger(tokens_per_minute) || tokens_per_minute < 1) {
        this.createError.set(new Error('The tokens per minute must be a whole number, at least 1.'));
        return;
      }
    }
    this.busy.set(true);
    this.created.set(null);
    this.copied.set('');
    try {
      const made = await this.api.createKey({
        id: this.id().trim(),
        scopes,
        expires_at,
        description: this.description().trim() || undefined,
        ...(tokens_per_minute !== undefined && { tokens_per_minute }),
      });
      this.created.set(made);
      this.createError.set(null);
      this.id.set('');
      this.description.set('');
      this.expires.set('');
      this.tpm.set('');
      await this.refresh();
    } catch (e) {
      this.createError.set(e);
    } finally {
      this.busy.set(false);
    }
  }

  protected async revoke(id: string): Promise<void> {
    this.busy.set(true);
    try {
      await this.api.revokeKey(id);
      this.revokeError.set(null);
      this.confirming.set(null);
      await this.refresh();
    } catch (e) {
      this.revokeError.set(e);
    } finally {
      this.busy.set(false);
    }
  }

  protected async copy(key: string): Promise<void> {
    try {
      await navigator.clipboard.writeText(key);
      this.copied.set('Copied.');
    } catch {
      this.copied.set('Copy was refused by the browser: select the key and copy it.');
    }
  }
}
