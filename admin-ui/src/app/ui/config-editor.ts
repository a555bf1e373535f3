import { ChangeDetectionStrategy, Component, computed, inject, input, linkedSignal, signal } from '@angular/core';
import { AuthStore } from '../core/auth.store';
import { PluginInfo } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { ProblemView } from './problem-view';

/** Checks config text before it is sent: JSON, and an object. Returns the error or null. */
export function validateConfig(text: string): { value?: Record<string, unknown>; error?: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: `Not valid JSON: ${e instanceof Error ? e.message : e}` };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return { error: 'The config must be a JSON object ({ … }).' };
  }
  return { value: value as Record<string, unknown> };
}

@Component({
  selector: 'app-config-editor',
  imports: [ProblemView],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <label [for]="'config-' + plugin().id" class="label">Config (JSON object)</label>
    <textarea
      [id]="'config-' + plugin().id"
      class="input h-48 font-mono text-xs"
      spellcheck="false"
      [readOnly]="!auth.canAdmin()"
      [value]="text()"
      (input)="edit($any($event.target).value)"
      [attr.aria-invalid]="!!validation().error"
      [attr.aria-describedby]="'config-help-' + plugin().id"
      data-testid="config-text"
    ></textarea>
    <p [id]="'config-help-' + plugin().id" class="mt-1 text-xs" [class]="validation().error ? 'text-red-800' : 'text-slate-700'" aria-live="polite">
      @if (!auth.canAdmin()) {
        Read-only: changing the config needs the admin scope.
      } @else if (validation().error) {
        {{ validation().error }}
      } @else if (dirty()) {
        Valid JSON, not saved yet.
      } @else {
        Saved config of the plugin.
      }
    </p>
    @if (auth.canAdmin()) {
      <div class="mt-2 flex gap-2">
        <button type="button" class="btn btn-primary" [disabled]="!!validation().error || !dirty() || saving()" (click)="save()" data-testid="config-save">
          @if (saving()) {<span class="spinner" aria-hidden="true"></span> Saving…} @else {Save config}
        </button>
        <button type="button" class="btn btn-secondary" [disabled]="!dirty() || saving()" (click)="reset()">Revert</button>
        <button type="button" class="btn btn-secondary" [disabled]="!!validation().error" (click)="format()">Format</button>
      </div>
    }
    @if (saved()) {
      <p role="status" class="mt-2 rounded-md border border-emerald-300 bg-emerald-50 p-2 text-sm text-emerald-900" data-testid="config-saved">
        Saved. The gateway now reports status {{ saved()!.status }}, config {{ savedJson() }}.
      </p>
    }
    <div class="mt-2"><app-problem [error]="saveError()" /></div>
  `,
})
export class ConfigEditor {
  readonly plugin = input.required<PluginInfo>();
  protected readonly auth = inject(AuthStore);
  private readonly store = inject(PluginsStore);

  private readonly original = computed(() => JSON.stringify(this.plugin().config ?? {}, null, 2));
  /** Follows the plugin's config until the user edits it. */
  protected readonly text = linkedSignal(() => this.original());
  protected readonly validation = computed(() => validateConfig(this.text()));
  protected readonly dirty = computed(() => this.text() !== this.original());
  protected readonly saving = signal(false);
  protected readonly saved = signal<PluginInfo | null>(null);
  protected readonly savedJson = computed(() => JSON.stringify(this.saved()?.config));
  protected readonly saveError = signal<unknown>(null);

  protected edit(value: string): void {
    this.text.set(value);
    this.saved.set(null);
  }

  protected reset(): void {
    this.text.set(this.original());
  }

  protected format(): void {
    const v = this.validation().value;
    if (v) this.text.set(JSON.stringify(v, null, 2));
  }

  protected async save(): Promise<void> {
    const v = this.validation().value;
    if (!v) return;
    this.saving.set(true);
    this.saveError.set(null);
    try {
      const plugin = await this.store.saveConfig(this.plugin().id, v);
      this.saved.set(plugin);
      this.text.set(JSON.stringify(plugin.config ?? {}, null, 2));
    } catch (e) {
      this.saveError.set(e);
    } finally {
      this.saving.set(false);
    }
  }
}
