import { ChangeDetectionStrategy, Component, computed, input } from '@angular/core';
import { ApiError, describeError } from '../core/api-error';

/** An error, readable: a problem+json body with its field errors and request id, or any other error. */
@Component({
  selector: 'app-problem',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (error(); as err) {
      <div role="alert" class="rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900" data-testid="problem">
        @if (problem(); as p) {
          <p class="font-semibold">{{ p.title }} <span class="font-normal">({{ p.status || 'network' }})</span></p>
          @if (p.detail) {
            <p class="mt-1">{{ p.detail }}</p>
          }
          @if (hint()) {
            <p class="mt-1 italic">{{ hint() }}</p>
          }
          @if (p.errors?.length) {
            <ul class="mt-2 list-disc space-y-0.5 pl-5">
              @for (e of p.errors; track $index) {
                <li><code class="mono rounded bg-red-100 px-1">{{ e.field || '/' }}</code> {{ e.message }}</li>
              }
            </ul>
          }
          @if (p.request_id) {
            <p class="mt-2 text-xs text-red-800">Request id <code class="mono">{{ p.request_id }}</code></p>
          }
        } @else {
          <p>{{ text() }}</p>
        }
      </div>
    }
  `,
})
export class ProblemView {
  readonly error = input<unknown>(null);
  protected readonly problem = computed(() => {
    const e = this.error();
    return e instanceof ApiError ? e.problem : null;
  });
  protected readonly text = computed(() => describeError(this.error()));
  protected readonly hint = computed(() => {
    const e = this.error();
    if (!(e instanceof ApiError)) return '';
    if (e.status === 0) return 'Is the gateway running? Check the address and your network.';
    if (e.status === 403) return 'Your API key does not carry the scope this needs.';
    if (e.status === 401) return 'Sign in again with a valid key.';
    return '';
  });
}
