import { ChangeDetectionStrategy, Component, effect, inject } from '@angular/core';
import { Router, RouterLink, RouterLinkActive, RouterOutlet } from '@angular/router';
import { AuthStore } from './core/auth.store';
import { LiveService } from './core/live.service';
import { PluginsStore } from './core/plugins.store';
import { Icon } from './ui/icon';

@Component({
  selector: 'app-root',
  imports: [RouterOutlet, RouterLink, RouterLinkActive, Icon],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <a href="#main" class="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:p-2">Skip to content</a>
    <header class="app-header border-b border-slate-200 bg-slate-900 text-white">
      <div class="mx-auto flex max-w-[96rem] flex-wrap items-center gap-x-6 gap-y-2 px-4 py-3">
        <a routerLink="/" class="flex items-center gap-2 text-lg font-bold tracking-tight"><app-icon name="plugins" [size]="5" />bkg <span class="font-normal opacity-75">console</span></a>
        @if (auth.signedIn()) {
          <nav aria-label="Main" class="flex gap-1 text-sm">
            <a routerLink="/" routerLinkActive="bg-slate-700" [routerLinkActiveOptions]="{ exact: true }" class="rounded px-3 py-1.5 hover:bg-slate-700">Plugins</a>
            @if (auth.canInvokeAny()) {
              <a routerLink="/playground" routerLinkActive="bg-slate-700" class="rounded px-3 py-1.5 hover:bg-slate-700">Playground</a>
            }
            @if (auth.canAdmin()) {
              <a routerLink="/keys" routerLinkActive="bg-slate-700" class="rounded px-3 py-1.5 hover:bg-slate-700">Keys</a>
            }
          </nav>
          <div class="ml-auto flex flex-wrap items-center gap-3 text-sm">
            <span class="flex items-center gap-1.5" role="status" [attr.aria-label]="'Live updates: ' + liveLabel()" data-testid="live-state">
              <span class="h-2.5 w-2.5 rounded-full" [class]="liveDot()" aria-hidden="true"></span>
              <span class="text-slate-200">{{ liveLabel() }}</span>
            </span>
            <span class="flex items-center gap-1.5 text-slate-300" [attr.title]="'API key ' + auth.keyId() + ', scopes: ' + auth.scopes().join(', ')" data-testid="key">
              <app-icon name="key" />
              <span class="sr-only">API key</span>
              <span class="font-mono">{{ auth.keyId() }}</span>
              <span class="rounded-full border border-slate-500 px-2 py-0.5 text-xs text-slate-200" data-testid="scopes">{{ scopeSummary() }}</span>
            </span>
            <button type="button" class="btn border-slate-500 text-white hover:bg-slate-700" (click)="signOut()"><app-icon name="logout" />Sign out</button>
          </div>
        }
      </div>
    </header>
    <main id="main" tabindex="-1" class="mx-auto max-w-[96rem] px-4 py-6 outline-none">
      <router-outlet />
    </main>
  `,
})
export class App {
  protected readonly auth = inject(AuthStore);
  protected readonly live = inject(LiveService);
  private readonly plugins = inject(PluginsStore);
  private readonly router = inject(Router);

  constructor() {
    // The live socket runs while signed in, whatever the page.
    effect(() => {
      if (this.auth.signedIn() && this.auth.canRead()) this.live.start();
      else this.live.stop();
    });
  }

  /** The key's scopes in a word: "full access" for admin, else the scopes themselves. */
  protected scopeSummary(): string {
    const scopes = this.auth.scopes();
    if (scopes.includes('admin')) return 'full access';
    return scopes.join(', ') || 'no scopes';
  }

  protected liveLabel(): string {
    switch (this.live.state()) {
      case 'open':
        return 'Live';
      case 'connecting':
        return 'Connecting…';
      default:
        return this.live.attempt() > 0 ? 'Reconnecting (polling)' : 'Offline';
    }
  }

  protected liveDot(): string {
    const s = this.live.state();
    return s === 'open' ? 'bg-emerald-400' : s === 'connecting' ? 'bg-amber-300' : 'bg-red-400';
  }

  protected signOut(): void {
    this.live.stop();
    this.plugins.clear();
    this.auth.signOut();
    void this.router.navigate(['/sign-in']);
  }
}
