import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { plugin, telemetry } from '../core/testing';
import { DashboardPage } from './dashboard';

describe('DashboardPage', () => {
  async function render(scopes: string[]) {
    const api = {
      plugins: vi.fn().mockResolvedValue([
        plugin({ id: 'echo', name: 'Echo' }),
        plugin({ id: 'candle', name: 'Candle', status: 'stopped', description: 'embeddings' }),
        plugin({ id: 'bad', name: 'Bad', status: 'error', last_error: 'exit 1' }),
      ]),
      telemetry: vi.fn().mockResolvedValue(telemetry()),
      whoami: vi.fn().mockResolvedValue({ key_id: 'k', scopes }),
      action: vi.fn(),
    };
    TestBed.configureTestingModule({ imports: [DashboardPage], providers: [provideRouter([]), { provide: ApiService, useValue: api }] });
    await TestBed.inject(AuthStore).signIn('k');
    const fixture = TestBed.createComponent(DashboardPage);
    await fixture.whenStable();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    return { el: fixture.nativeElement as HTMLElement, fixture, api };
  }

  it('shows a card per plugin and the counts', async () => {
    const { el, api } = await render(['read']);
    expect(el.querySelectorAll('[data-testid=plugin-card]').length).toBe(3);
    expect(el.querySelector('[data-testid=counts]')!.textContent).toMatch(/3 plugins:\s*1 running,\s*1 stopped,\s*1 in error/);
    expect(api.telemetry).toHaveBeenCalledWith('echo'); // first figures for running plugins only
    expect(api.telemetry).toHaveBeenCalledTimes(1);
  });

  it('a read-only key gets no action buttons; an admin key does', async () => {
    const { el } = await render(['read']);
    expect([...el.querySelectorAll('button')].some((b) => b.textContent?.trim() === 'Stop')).toBe(false);
    TestBed.resetTestingModule();
    const admin = await render(['admin']);
    expect([...admin.el.querySelectorAll('button')].filter((b) => b.textContent?.trim() === 'Stop').length).toBe(3);
  });

  it('searches and filters', async () => {
    const { el, fixture } = await render(['read']);
    const search = el.querySelector('#search') as HTMLInputElement;
    search.value = 'embed';
    search.dispatchEvent(new Event('input'));
    await fixture.whenStable();
    expect([...el.querySelectorAll('[data-testid=plugin-card]')].map((c) => c.getAttribute('data-plugin'))).toEqual(['candle']);
    search.value = '';
    search.dispatchEvent(new Event('input'));
    const filter = el.querySelector('#status-filter') as HTMLSelectElement;
    filter.value = 'error';
    filter.dispatchEvent(new Event('change'));
    await fixture.whenStable();
    expect([...el.querySelectorAll('[data-testid=plugin-card]')].map((c) => c.getAttribute('data-plugin'))).toEqual(['bad']);
  });
});
