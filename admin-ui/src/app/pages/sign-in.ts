import { ChangeDetectionStrategy, Component, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { Router } from '@angular/router';
import { AuthStore } from '../core/auth.store';

@Component({
  selector: 'app-sign-in',
  imports: [FormsModule],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="mx-auto mt-8 max-w-md">
      <div class="card p-6">
        <h1 class="mb-1 text-2xl font-bold">Sign in</h1>
        <p class="mb-4 text-sm text-slate-700">
          Enter a bkg API key. It is kept only in this browser tab (session storage) and forgotten when you sign out
          or close the tab.
        </p>
        @if (auth.notice(); as notice) {
          <p role="alert" class="mb-4 rounded-md border border-amber-300 bg-amber-50 p-3 text-sm text-amber-900" data-testid="notice">
            {{ notice }}
          </p>
        }
        <form (ngSubmit)="submit()" novalidate>
          <label for="api-key" class="label">API key</label>
          <input
            id="api-key"
            name="apiKey"
            class="input font-mono"
            [type]="reveal() ? 'text' : 'password'"
            autocomplete="off"
            spellcheck="false"
            required
            [(ngModel)]="key"
            [attr.aria-invalid]="!!auth.error()"
            [attr.aria-describedby]="auth.error() ? 'sign-in-error' : null"
          />
          <label class="mt-2 flex items-center gap-2 text-sm text-slate-700">
            <input type="checkbox" [checked]="reveal()" (change)="reveal.set(!reveal())" /> Show key
          </label>
          @if (auth.error(); as error) {
            <p id="sign-in-error" role="alert" class="mt-3 rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900" data-testid="sign-in-error">
              {{ error }}
            </p>
          }
          <button type="submit" class="btn btn-primary mt-4 w-full" [disabled]="auth.checking()">
            @if (auth.checking()) {
              <span class="spinner" aria-hidden="true"></span> Checking…
            } @else {
              Sign in
            }
          </button>
        </form>
      </div>
    </div>
  `,
})
export class SignInPage {
  protected readonly auth = inject(AuthStore);
  private readonly router = inject(Router);
  protected key = '';
  protected readonly reveal = signal(false);

  protected async submit(): Promise<void> {
    if (await this.auth.signIn(this.key)) {
      this.key = '';
      await this.router.navigate(['/']);
    }
  }
}
