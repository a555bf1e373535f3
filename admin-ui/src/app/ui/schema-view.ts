import { ChangeDetectionStrategy, Component, computed, input, signal } from '@angular/core';
import { describeType, schemaNotes, schemaRows } from '../core/schema';

/** A JSON schema as a readable table of its fields, with the raw schema on demand. */
@Component({
  selector: 'app-schema-view',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="text-sm">
      <p class="mb-1 text-xs font-semibold uppercase tracking-wide text-slate-600">{{ label() }}: <span class="normal-case">{{ rootType() }}</span></p>
      @for (n of notes(); track n) {
        <p class="text-xs text-slate-700">{{ n }}</p>
      }
      @if (rows().length) {
        <div class="overflow-x-auto">
          <table class="mt-1 w-full text-left text-xs">
            <thead class="text-slate-600">
              <tr><th scope="col" class="py-1 pr-3 font-medium">Field</th><th scope="col" class="py-1 pr-3 font-medium">Type</th><th scope="col" class="py-1 font-medium">Description</th></tr>
            </thead>
            <tbody>
              @for (r of rows(); track r.path) {
                <tr class="border-t border-slate-100 align-top">
                  <td class="py-1 pr-3 font-mono" [style.padding-left.rem]="r.depth * 0.75">
                    {{ r.path }}@if (r.required) {<span class="text-red-700" title="required"> *</span><span class="sr-only"> (required)</span>}
                  </td>
                  <td class="py-1 pr-3 font-mono text-slate-800">{{ r.type }}</td>
                  <td class="py-1 text-slate-700">{{ r.description }}</td>
                </tr>
              }
            </tbody>
          </table>
        </div>
      }
      <button type="button" class="mt-1 text-xs text-blue-800 underline" [attr.aria-expanded]="raw()" (click)="raw.set(!raw())">
        {{ raw() ? 'Hide' : 'Show' }} raw schema
      </button>
      @if (raw()) {
        <pre class="mono mt-1 max-h-64 overflow-auto rounded bg-slate-100 p-2">{{ json() }}</pre>
      }
    </div>
  `,
})
export class SchemaView {
  readonly schema = input<unknown>(true);
  readonly label = input('Schema');
  protected readonly raw = signal(false);
  protected readonly rows = computed(() => schemaRows(this.schema()));
  protected readonly notes = computed(() => schemaNotes(this.schema()));
  protected readonly rootType = computed(() => describeType(this.schema()));
  protected readonly json = computed(() => JSON.stringify(this.schema(), null, 2));
}
