import { Component, input, signal } from '@angular/core';
import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { LiveService } from '../core/live.service';
import { PluginsStore } from '../core/plugins.store';
import { instance, scaledPlugin, telemetry } from '../core/testing';
import { LogTail } from '../ui/log-tail';
import { TelemetryChart } from '../ui/telemetry-chart';
import { PluginDetailPage } from './plugin-detail';

// Chart.js needs a real canvas and the log tail its own socket: neither is what this spec is about.
@Component({ selector: 'app-telemetry-chart', template: '' })
class ChartStub {
  readonly samples = input<unknown>();
  readonly metric = input<unknown>();
}
@Component({ selector: 'app-log-tail', template: '' })
class LogTailStub {
  readonly pluginId = input<string>();
}

describe('PluginDetailPage: Scaling', () => {
  async function render() {
    const api = {
      plugin: vi.fn().mockResolvedValue(scaledPlugin()),
      telemetry: vi.fn().mockResolvedValue(telemetry({ plugin_id: 'echo-auto' })),
      logs: vi.fn().mockResolvedValue({ plugin_id: 'echo-auto', lines: [] }),
      whoami: vi.fn().mockResolvedValue({ key_id: 'k', scopes: ['read'] }),
    };
    // Status pushes reach the page through the store: here they are store.upsert calls.
    const live = { state: signal('open'), settle: async () => undefined };
    TestBed.configureTestingModule({
      imports: [PluginDetailPage],
      providers: [provideRouter([]), { provide: ApiService, useValue: api }, { provide: LiveService, useValue: live }],
    }).overrideComponent(PluginDetailPage, {
      remove: { imports: [TelemetryChart, LogTail] },
      add: { imports: [ChartStub, LogTailStub] },
    });
    await TestBed.inject(AuthStore).signIn('k');
    const fixture = TestBed.createComponent(PluginDetailPage);
    fixture.componentRef.setInput('id', 'echo-auto');
    await fixture.whenStable();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    return { el: fixture.nativeElement as HTMLElement, fixture, store: TestBed.inject(PluginsStore) };
  }
  const text = (el: HTMLElement, id: string) => el.querySelector(`[data-testid=${id}]`)?.textContent?.replace(/\s+/g, ' ').trim();

  it('has a Scaling section under its heading that follows status pushes', async () => {
    const { el, fixture, store } = await render();
    const section = el.querySelector('section[aria-labelledby=scaling-title]')!;
    expect(section.querySelector('h2')!.textContent).toBe('Scaling');
    expect(text(el, 'scaling-owner')).toBe('bkg autoscaler, in-flight target 2 per replica');
    expect(text(el, 'scale-wanted')).toBe('0');
    expect(text(el, 'scaling-notes')).toContain('Scales to zero after 60 s idle.');

    store.upsert(
      scaledPlugin({
        replicas: 2,
        ready_replicas: 1,
        instances: [instance({ name: 'echo-auto-0' }), instance({ name: 'echo-auto-1', state: 'starting', ready: false })],
        scale_history: [
          { time: '2026-12-05T12:00:00Z', from: 0, to: 1, reason: 'activation' },
          { time: '2026-12-05T12:00:02Z', from: 1, to: 2, reason: '4 in flight' },
        ],
      }),
    );
    await fixture.whenStable();
    expect(text(el, 'scale-current')).toBe('2 (1 ready)');
    expect(text(el, 'scale-wanted')).toBe('2');
    expect(el.querySelectorAll('[data-testid=scale-event]').length).toBe(2);
    expect(el.querySelector('[data-testid=scale-event]')!.textContent).toContain('4 in flight');
  });
});
