import { ChangeDetectionStrategy, Component, OnInit, computed, inject, input, linkedSignal, signal } from '@angular/core';
import { NgTemplateOutlet } from '@angular/common';
import { Router } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { compactJson, findEmbeddings } from '../core/embeddings';
import { detections, formOptions, imageInput } from '../core/media';
import { Capability, PluginInfo } from '../core/models';
import { PluginsStore } from '../core/plugins.store';
import { FormField, buildPayload, examplePayload, formFields, formValues } from '../core/schema';
import { ChatPanel } from '../ui/chat-panel';
import { FaceBoxes } from '../ui/face-boxes';
import { ImageDrop } from '../ui/image-drop';
import { ProblemView } from '../ui/problem-view';
import { SchemaView } from '../ui/schema-view';

/** The capability id that text-generating plugins serve OpenAI's chat completions under. */
const CHAT = 'chat';

interface InvokeResult {
  ok: boolean;
  ms: number;
  response?: unknown;
  error?: unknown;
  at: Date;
  /** The image sent (object URL or data: URL), to draw the answer's boxes over. */
  image?: string | null;
}

@Component({
  selector: 'app-playground',
  imports: [ChatPanel, FaceBoxes, ImageDrop, NgTemplateOutlet, ProblemView, SchemaView],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <h1 class="mb-4 text-2xl font-bold">Invoke playground</h1>
    <ng-template #pickers>
      <div class="grid grid-cols-1 gap-3 sm:grid-cols-2">
        <div>
          <label for="pg-plugin" class="label">Plugin</label>
          <select id="pg-plugin" class="input" [value]="pluginId()" (change)="choosePlugin($any($event.target).value)" data-testid="pg-plugin">
            @for (p of invocable(); track p.id) {
              <option [value]="p.id" [selected]="p.id === pluginId()">{{ p.name }} ({{ p.status }})</option>
            }
          </select>
        </div>
        <div>
          <label for="pg-cap" class="label">Capability</label>
          <select id="pg-cap" class="input" [value]="capId()" (change)="chooseCapability($any($event.target).value)" data-testid="pg-capability">
            @for (c of capabilities(); track c.id) {
              <option [value]="c.id" [selected]="c.id === capId()">{{ c.name }} ({{ c.id }})</option>
            }
          </select>
        </div>
      </div>
      @if (selectedPlugin()?.status !== 'running' && selectedPlugin()) {
        <p class="rounded bg-amber-50 p-2 text-sm text-amber-900" role="status">The plugin is {{ selectedPlugin()!.status }}; the call will likely fail.</p>
      }
    </ng-template>
    @if (chatMode()) {
      <section class="card mb-6 space-y-3" aria-label="Plugin and capability">
        <ng-container [ngTemplateOutlet]="pickers" />
      </section>
      <app-chat-panel [plugin]="pluginId()" [pluginName]="selectedPlugin()?.name ?? ''" [canSend]="auth.canInvoke(pluginId(), capId())" />
    } @else {
      <div class="grid grid-cols-1 gap-6 lg:grid-cols-2">
        <section class="card space-y-4" aria-labelledby="req-title">
          <h2 id="req-title" class="section-title">Request</h2>
          <ng-container [ngTemplateOutlet]="pickers" />
          @if (capability(); as c) {
            @if (c.description) {<p class="text-sm text-slate-700">{{ c.description }}</p>}
            @if (chatCapable()) {
              <p class="text-sm text-slate-700">This plugin can chat: <button type="button" class="btn text-sm" (click)="chooseCapability('chat')" data-testid="pg-open-chat">Open the chat</button></p>
            }
            <details class="text-sm"><summary class="cursor-pointer text-blue-800">Input schema</summary><app-schema-view [schema]="c.input_schema" label="Input" /></details>

            <fieldset class="flex gap-4 text-sm">
              <legend class="sr-only">Payload editor</legend>
              <label class="flex items-center gap-1.5"><input #formRadio type="radio" name="mode" value="form" [checked]="mode() === 'form'" [disabled]="!fields()" (change)="setMode('form'); formRadio.checked = mode() === 'form'; jsonRadio.checked = mode() === 'json'" data-testid="mode-form" /> Form</label>
              <label class="flex items-center gap-1.5"><input #jsonRadio type="radio" name="mode" value="json" [checked]="mode() === 'json'" (change)="setMode('json')" data-testid="mode-json" /> Raw JSON</label>
            </fieldset>

            @if (mode() === 'form' && fields(); as fs) {
              <div class="space-y-3">
                @for (f of fs; track f.name) {
                  <div>
                    @if (f.name === imageIn()?.name) {
                      <app-image-drop [accept]="imageIn()!.accept" [label]="f.name" [inputId]="'f-' + f.name" [required]="f.required" (picked)="pickImage($event)" />
                      @if (image(); as img) {
                        <img [src]="img.url" alt="The image to send" class="mt-2 max-h-40 rounded border border-slate-300" data-testid="image-preview" />
                      }
                      @if (f.description) {<p class="mt-0.5 text-xs text-slate-600">{{ f.description }}</p>}
                    } @else if (f.kind === 'string-list') {
                      <fieldset [attr.data-testid]="'list-' + f.name">
                        <legend class="label">{{ f.name }}@if (f.required) {<span class="text-red-700" aria-hidden="true"> *</span>}</legend>
                        <ol class="space-y-1">
                          @for (item of list(f.name); track $index; let i = $index) {
                            <li class="flex gap-2">
                              <input [id]="i === 0 ? 'f-' + f.name : null" type="text" class="input" [value]="item" (input)="setItem(f.name, i, $any($event.target).value)" [attr.aria-label]="f.name + ' item ' + (i + 1)" />
                              <button type="button" class="btn" (click)="removeItem(f.name, i)" [attr.aria-label]="'Remove ' + f.name + ' item ' + (i + 1)">✕</button>
                            </li>
                          }
                        </ol>
                        <button type="button" class="btn mt-1 text-sm" (click)="addItem(f.name)">Add {{ f.name }} item</button>
                        @if (f.description) {<p class="mt-0.5 text-xs text-slate-600">{{ f.description }}</p>}
                      </fieldset>
                    } @else if (f.kind === 'boolean') {
                      <label class="flex items-center gap-2 text-sm font-medium"><input type="checkbox" [id]="'f-' + f.name" [checked]="values()[f.name] === true" (change)="set(f.name, $any($event.target).checked)" /> {{ f.name }}</label>
                    } @else {
                      <label [for]="'f-' + f.name" class="label">{{ f.name }}@if (f.required) {<span class="text-red-700" aria-hidden="true"> *</span>}</label>
                      @switch (f.kind) {
                        @case ('enum') {
                          <select [id]="'f-' + f.name" class="input" [value]="str(f.name)" (change)="set(f.name, $any($event.target).value)" [required]="f.required">
                            <option value="">(none)</option>
                            @for (o of f.options; track $index) {<option [value]="'' + o">{{ o }}</option>}
                          </select>
                        }
                        @case ('integer') {
                          <input [id]="'f-' + f.name" type="number" step="1" class="input" [attr.min]="f.minimum" [attr.max]="f.maximum" [value]="str(f.name)" (input)="set(f.name, $any($event.target).value)" [required]="f.required" />
                        }
                        @case ('number') {
                          <input [id]="'f-' + f.name" type="number" step="any" class="input" [attr.min]="f.minimum" [attr.max]="f.maximum" [value]="str(f.name)" (input)="set(f.name, $any($event.target).value)" [required]="f.required" />
                        }
                        @case ('string') {
                          <input [id]="'f-' + f.name" type="text" class="input" [value]="str(f.name)" (input)="set(f.name, $any($event.target).value)" [required]="f.required" />
                        }
                        @default {
                          <textarea [id]="'f-' + f.name" class="input h-20 font-mono text-xs" [value]="str(f.name)" (input)="set(f.name, $any($event.target).value)" [required]="f.required"></textarea>
                        }
                      }
                      <p class="mt-0.5 text-xs text-slate-600">
                        {{ f.description }}
                        @if (f.kind === 'json') { JSON value. }
                        @if (f.kind === 'tensor') { <span data-testid="tensor-hint">{{ f.dtype }} [{{ f.shape?.join(', ') }}]: the values row-major, one row per line; {{ tensorHint(f) }}</span> }
                      </p>
                    }
                  </div>
                }
              </div>
            } @else {
              <div>
                <label for="pg-json" class="label">Payload (JSON)</label>
                <textarea id="pg-json" class="input h-48 font-mono text-xs" spellcheck="false" [value]="raw()" (input)="raw.set($any($event.target).value)" data-testid="pg-json"></textarea>
              </div>
            }
            @if (inputError()) {
              <p role="alert" class="text-sm text-red-800">{{ inputError() }}</p>
            }
            <button type="button" class="btn btn-primary" [disabled]="sending() || !auth.canInvoke(pluginId(), capId())" (click)="send()" data-testid="pg-send">
              @if (sending()) {<span class="spinner" aria-hidden="true"></span> Sending…} @else {Send}
            </button>
            @if (!auth.canInvoke(pluginId(), capId())) {
              <p class="text-sm text-slate-700">Your key may not invoke this capability.</p>
            }
          } @else {
            <p class="text-sm text-slate-700">No plugin with capabilities to invoke.</p>
          }
        </section>

        <section class="card" aria-labelledby="res-title" aria-live="polite">
          <h2 id="res-title" class="section-title">Response</h2>
          @if (result(); as r) {
            <p class="mb-2 text-sm" data-testid="pg-latency">
              <span class="font-semibold" [class]="r.ok ? 'text-emerald-800' : 'text-red-800'">{{ r.ok ? 'OK' : 'Failed' }}</span>
              in <span class="tabular-nums">{{ r.ms.toFixed(1) }} ms</span>
            </p>
            @if (r.ok) {
              @if (faces(); as d) {
                <app-face-boxes [src]="r.image ?? null" [detections]="d" />
              }
              @if (embeddings(); as e) {
                <div class="mb-3" data-testid="pg-embeddings">
                  <p class="text-sm font-semibold">{{ e.vectors.length }} embedding{{ e.vectors.length === 1 ? '' : 's' }} of dimension {{ e.vectors[0].dim }}@if (e.model) { · {{ e.model }}}</p>
                  <ul class="mt-1 space-y-1 font-mono text-xs">
                    @for (v of e.vectors.slice(0, 20); track v.index) {
                      <li>#{{ v.index }} [{{ nums(v.head) }}, …, {{ nums(v.tail) }}] <span class="text-slate-600">dim {{ v.dim }}, ‖v‖ {{ v.norm.toFixed(3) }}</span></li>
                    }
                  </ul>
                </div>
              }
              <pre class="mono max-h-[32rem] overflow-auto rounded bg-slate-100 p-2" data-testid="pg-response">{{ responseText() }}</pre>
            } @else {
              <app-problem [error]="r.error" />
            }
          } @else {
            <p class="text-sm text-slate-700">Send a request to see the answer here.</p>
          }
        </section>
      </div>
    }
  `,
})
export class PlaygroundPage implements OnInit {
  /** Query parameters. */
  readonly plugin = input<string>();
  readonly capability_ = input<string | undefined>(undefined, { alias: 'capability' });

  protected readonly store = inject(PluginsStore);
  protected readonly auth = inject(AuthStore);
  private readonly api = inject(ApiService);
  private readonly router = inject(Router);

  protected readonly invocable = computed(
    () => this.store.list().filter((p) => p.capabilities.length && this.auth.canInvoke(p.id)),
    { equal: (a, b) => a.length === b.length && a.every((p, i) => p.id === b[i].id && p.name === b[i].name) },
  );
  protected readonly pluginId = linkedSignal(() => this.plugin() ?? this.invocable()[0]?.id ?? '');
  protected readonly selectedPlugin = computed<PluginInfo | undefined>(() => this.store.plugins()[this.pluginId()]);
  protected readonly capabilities = computed<Capability[]>(() => this.selectedPlugin()?.capabilities ?? [], {
    equal: (a, b) => a === b || JSON.stringify(a) === JSON.stringify(b),
  });
  protected readonly capId = linkedSignal(() => {
    const caps = this.capabilities();
    const wanted = this.capability_();
    return caps.find((c) => c.id === wanted)?.id ?? caps[0]?.id ?? '';
  });
  /** The `chat` capability is selected: the chat view (OpenAI's streamed chat route) replaces the invoke form. */
  protected readonly chatMode = computed(() => this.capId() === CHAT);
  /** Another capability is selected, but the plugin can chat. */
  protected readonly chatCapable = computed(() => !this.chatMode() && this.capabilities().some((c) => c.id === CHAT));
  /**
   * The selected capability. Live `status` pushes replace the plugin object many times a minute; equal by
   * content, so the editors below (linked to it) keep what the user typed until the schema really changes.
   */
  protected readonly capability = computed(() => this.capabilities().find((c) => c.id === this.capId()), {
    equal: (a, b) => a === b || (!!a && !!b && a.id === b.id && JSON.stringify(a.input_schema) === JSON.stringify(b.input_schema)),
  });
  protected readonly fields = computed<FormField[] | null>(() => {
    const c = this.capability();
    return c ? formFields(c.input_schema) : null;
  });
  protected readonly mode = linkedSignal<'form' | 'json'>(() => (this.fields() ? 'form' : 'json'));
  protected readonly values = linkedSignal<Record<string, unknown>>(() => {
    const out: Record<string, unknown> = {};
    for (const f of this.fields() ?? []) {
      if (f.kind === 'string-list') out[f.name] = Array.isArray(f.default) ? f.default.map(String) : [''];
      else if (f.default !== undefined) out[f.name] = f.kind === 'boolean' ? f.default : String(f.default);
    }
    return out;
  });
  protected readonly raw = linkedSignal(() => {
    const c = this.capability();
    return JSON.stringify(c ? examplePayload(c.input_schema) : {}, null, 2);
  });
  protected readonly inputError = signal<string | null>(null);
  protected readonly sending = signal(false);
  protected readonly result = signal<InvokeResult | null>(null);
  protected readonly embeddings = computed(() => {
    const r = this.result();
    return r?.ok ? findEmbeddings(r.response) : null;
  });
  /** The input property that takes an image (contentEncoding base64, contentMediaType image/…): a file picker in the form. */
  protected readonly imageIn = computed(() => imageInput(this.capability()?.input_schema));
  /** The image picked for it; a new capability starts without one. */
  protected readonly image = linkedSignal<{ file: File; url: string } | null>(() => {
    this.capability();
    return null;
  });
  /** A face detector's answer (`faces` with boxes, `width`, `height`): drawn over the image sent. */
  protected readonly faces = computed(() => {
    const r = this.result();
    return r?.ok ? detections(r.response) : null;
  });
  protected readonly responseText = computed(() => compactJson(this.result()?.response));

  async ngOnInit(): Promise<void> {
    if (!this.store.loaded()) await this.store.load();
  }

  protected choosePlugin(id: string): void {
    this.pluginId.set(id);
    this.result.set(null);
    void this.router.navigate([], { queryParams: { plugin: id, capability: null }, replaceUrl: true });
  }

  protected chooseCapability(id: string): void {
    this.capId.set(id);
    this.result.set(null);
    void this.router.navigate([], { queryParams: { plugin: this.pluginId(), capability: id }, replaceUrl: true });
  }

  /** Switches editors, carrying the payload across both ways. */
  protected setMode(mode: 'form' | 'json'): void {
    const fields = this.fields();
    if (mode === 'json' && this.mode() === 'form' && fields) {
      try {
        this.raw.set(JSON.stringify(buildPayload(fields, this.values()), null, 2));
      } catch {
        // keep the previous raw text
      }
    }
    if (mode === 'form' && this.mode() === 'json' && fields) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(this.raw());
      } catch (e) {
        return this.refuseMode(`The JSON is not valid, so the form cannot show it: ${e instanceof Error ? e.message : e}`);
      }
      const back = formValues(fields, parsed);
      if (!back) return this.refuseMode('The payload is not a JSON object, so the form cannot show it.');
      if (back.unknown.length) return this.refuseMode(`The form has no field for ${back.unknown.join(', ')}: edit those in raw JSON.`);
      for (const f of fields) if (f.kind === 'string-list' && !back.values[f.name]) back.values[f.name] = [''];
      this.values.set(back.values);
    }
    this.mode.set(mode);
    this.inputError.set(null);
  }

  /** Stays in raw JSON mode, saying why (the radio buttons follow `mode`). */
  private refuseMode(message: string): void {
    this.inputError.set(message);
    this.mode.set('json');
  }

  protected list(name: string): string[] {
    const v = this.values()[name];
    return Array.isArray(v) ? (v as string[]) : [];
  }

  protected setItem(name: string, i: number, value: string): void {
    this.values.update((v) => ({ ...v, [name]: this.list(name).map((x, j) => (j === i ? value : x)) }));
  }

  protected addItem(name: string): void {
    this.values.update((v) => ({ ...v, [name]: [...this.list(name), ''] }));
  }

  protected removeItem(name: string, i: number): void {
    this.values.update((v) => ({ ...v, [name]: this.list(name).filter((_, j) => j !== i) }));
  }

  protected str(name: string): string {
    const v = this.values()[name];
    return v === undefined || v === null ? '' : String(v);
  }

  protected set(name: string, value: unknown): void {
    this.values.update((v) => ({ ...v, [name]: value }));
  }

  protected pickImage(file: File): void {
    const old = this.image();
    // The old preview may still be the one a shown result draws on: keep its URL until replaced.
    if (old && old.url !== this.result()?.image) URL.revokeObjectURL(old.url);
    this.image.set({ file, url: URL.createObjectURL(file) });
  }

  protected tensorHint(f: FormField): string {
    const dynamic = (f.shape ?? []).find((d) => typeof d !== 'number');
    return dynamic === undefined ? 'every value is needed.' : `${dynamic} follows from the count.`;
  }

  protected nums(xs: number[]): string {
    return xs.map((x) => x.toFixed(4)).join(', ');
  }

  private payload(): unknown {
    const fields = this.fields();
    if (this.mode() === 'form' && fields) {
      const image = this.imageIn()?.name;
      return buildPayload(fields.filter((f) => f.name !== image), this.values());
    }
    try {
      return JSON.parse(this.raw());
    } catch (e) {
      throw new Error(`The payload is not valid JSON: ${e instanceof Error ? e.message : e}`);
    }
  }

  /** The image a JSON payload carries in the image property (base64 or a data: URL), to show with the answer. */
  private jsonImage(payload: unknown): string | null {
    const name = this.imageIn()?.name;
    const v = name && payload && typeof payload === 'object' ? (payload as Record<string, unknown>)[name] : undefined;
    if (typeof v !== 'string' || !v) return null;
    return v.startsWith('data:') ? v : `data:image/*;base64,${v}`;
  }

  protected async send(): Promise<void> {
    let payload: unknown;
    try {
      payload = this.payload();
    } catch (e) {
      this.inputError.set(e instanceof Error ? e.message : String(e));
      return;
    }
    // In the form, an image input is a file: sent as multipart/form-data with the other fields.
    const imageIn = this.mode() === 'form' ? this.imageIn() : null;
    const image = this.image();
    if (imageIn && !image) {
      this.inputError.set(`Choose an image for ${imageIn.name} (file picker or drop).`);
      return;
    }
    this.inputError.set(null);
    this.sending.set(true);
    const started = performance.now();
    const shown = imageIn ? image!.url : this.jsonImage(payload);
    try {
      const response = imageIn
        ? await this.api.invokeFile(this.pluginId(), this.capId(), image!.file, image!.file.name, formOptions(payload as Record<string, unknown>, imageIn.name))
        : await this.api.invoke(this.pluginId(), this.capId(), payload);
      this.result.set({ ok: true, ms: performance.now() - started, response, at: new Date(), image: shown });
    } catch (error) {
      this.result.set({ ok: false, ms: performance.now() - started, error, at: new Date() });
    } finally {
      this.sending.set(false);
    }
  }
}
