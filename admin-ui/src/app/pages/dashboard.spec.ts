import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { plugin, telemetry } from '../core/testing';
import { DashboardPage } from './dashboard';

describe('DashboardPage', () => {
  async function render(scopes: string[], errorPlugin = true) {
    const api = {
      plugins: vi.fn().mockResolvedValue([
        plugin({ id: 'echo', name: 'Echo' }),
        plugin({ id: 'candle', name: 'Candle', status: 'stopped', description: 'embeddings' }),
        ...(errorPlugin ? [plugin({ id: 'bad', name: 'Bad', status: 'error', last_error: 'exit 1' })] : []),
      ]),
      overview: vi.fn().mockResolvedValue({
        interval_ms: 5000,
        window_secs: 600,
        samples: [0, 1, 2].map((i) => ({
          time_ms: 1_000 + i * 5000, cpu_percent: 1, memory_mb: 10, replicas: 1, requests: 10 * i, errors: 0,
          request_rate: 2 * i, error_rate: 0, p50_ms: i ? 1.5 : null, p99_ms: i ? 12 : null, runtime_requests: 10 * i, runtime_errors: 0,
        })),
        plugins: [{ plugin_id: 'echo', request_rate: [0, 2, 4], cpu_percent: [1, 1, 1] }],
      }),
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

  it('opens with the gateway-wide rate, latency and errors, and a sparkline per card', async () => {
    const { el, api } = await render(['read']);
    expect(api.overview).toHaveBeenCalled();
    const kpi = (id: string) => el.querySelector(`[data-testid=kpi-${id}] [data-testid=kpi-value]`)!.textContent!.trim();
    expect(kpi('rate')).toBe('4.0 req/s');
    expect(kpi('p50')).toBe('1.5 ms');
    expect(kpi('p99')).toBe('12 ms');
    expect(kpi('errors')).toBe('0%');
    const echo = el.querySelector('[data-plugin=echo] [data-testid=sparkline]')!;
    expect(echo.getAttribute('data-points')).toBe('3');
    expect(echo.querySelector('polyline')).not.toBeNull();
  });

  it('"0 in error" is not red; "1 in error" is', async () => {
    const none = await render(['read'], false);
    const zero = [...none.el.querySelectorAll('[data-testid=counts] span')].find((s) => s.textContent?.includes('in error'))!;
    expect(zero.textContent).toContain('0 in error');
    expect(zero.classList.contains('text-red-800')).toBe(false);
    TestBed.resetTestingModule();
    const one = await render(['read']);
    const red = [...one.el.querySelectorAll('[data-testid=counts] span')].find((s) => s.textContent?.includes('in error'))!;
    expect(red.classList.contains('text-red-800')).toBe(true);
  });
});
