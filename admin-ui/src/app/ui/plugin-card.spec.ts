import { ComponentFixture, TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { PluginInfo } from '../core/models';
import { plugin, scaledPlugin, telemetry } from '../core/testing';
import { PluginCard, aliasLabel, allowedActions } from './plugin-card';

describe('PluginCard', () => {
  let fixture: ComponentFixture<PluginCard>;

  async function render(p: PluginInfo, inputs: Record<string, unknown> = {}) {
    TestBed.configureTestingModule({ imports: [PluginCard], providers: [provideRouter([])] });
    fixture = TestBed.createComponent(PluginCard);
    fixture.componentRef.setInput('plugin', p);
    for (const [k, v] of Object.entries(inputs)) fixture.componentRef.setInput(k, v);
    await fixture.whenStable();
    return fixture.nativeElement as HTMLElement;
  }

  const button = (el: HTMLElement, name: string) =>
    [...el.querySelectorAll('button')].find((b) => b.textContent?.trim() === name) as HTMLButtonElement | undefined;

  it('shows name, version, status and telemetry', async () => {
    const el = await render(plugin(), { telemetry: telemetry({ cpu_percent: 12.3, memory_mb: 2048, uptime_secs: 3700 }) });
    expect(el.querySelector('h2')?.textContent).toContain('Echo');
    expect(el.textContent).toContain('v0.1.0');
    expect(el.querySelector('[data-testid=status-badge]')?.getAttribute('data-status')).toBe('running');
    expect(el.textContent).toContain('12%');
    expect(el.textContent).toContain('2.00 GiB');
    expect(el.textContent).toContain('1h 1m');
  });

  it('shows each alias with the share of its calls', async () => {
    expect(aliasLabel({ name: 'minilm', percent: 90 })).toBe('alias minilm · 90 %');
    expect(aliasLabel({ name: 'm', percent: 66.7 })).toBe('alias m · 66.7 %');
    const el = await render(plugin({ aliases: [{ name: 'minilm', weight: 90, percent: 90 }] }));
    expect(el.querySelector('[data-testid=aliases]')?.textContent).toContain('alias minilm · 90 %');
  });

  it('shows no alias line for a plugin without aliases', async () => {
    const el = await render(plugin());
    expect(el.querySelector('[data-testid=aliases]')).toBeNull();
  });

  it('a read-only key sees no Stop button', async () => {
    const el = await render(plugin(), { canAdmin: false });
    expect(button(el, 'Stop')).toBeUndefined();
    expect(button(el, 'Start')).toBeUndefined();
  });

  it('enables actions by status and emits them', async () => {
    const el = await render(plugin({ status: 'running' }), { canAdmin: true });
    expect(button(el, 'Start')!.disabled).toBe(true);
    expect(button(el, 'Stop')!.disabled).toBe(false);
    const emitted: string[] = [];
    fixture.componentInstance.action.subscribe((a) => emitted.push(a));
    button(el, 'Stop')!.click();
    expect(emitted).toEqual(['stop']);
  });

  it('shows progress while an action runs', async () => {
    const el = await render(plugin(), { canAdmin: true, busy: 'restart' });
    const restart = button(el, 'Restart')!;
    expect(restart.getAttribute('aria-busy')).toBe('true');
    expect(restart.querySelector('.spinner')).not.toBeNull();
    expect(button(el, 'Stop')!.disabled).toBe(true);
  });

  it('shows the GPU when the plugin has one', async () => {
    const el = await render(plugin({ resources: { timeout_secs: 1, max_concurrency: 1, gpu_count: 2, gpu_vendor: 'nvidia' } }));
    expect(el.textContent).toContain('GPU: 2 × nvidia');
  });

  it('an autoscaled plugin shows ready/wanted and its range compactly', async () => {
    const el = await render(scaledPlugin({ replicas: 4, ready_replicas: 0 }));
    expect(el.querySelector('[data-testid=replicas]')!.textContent!.replace(/\s+/g, ' ').trim()).toBe('0/4 · autoscaled 0–4');
  });

  it('a fixed count shows ready/wanted only', async () => {
    const el = await render(plugin({ replicas: 2, ready_replicas: 1 }));
    expect(el.querySelector('[data-testid=replicas]')!.textContent!.trim()).toBe('1/2');
  });

  it('a running plugin whose manifest has an error says an older version runs, with the message', async () => {
    const message = 'two.yaml: invalid Plugin manifest "echo": spec.config.startupDelayMs: "soon" is not of type "integer"';
    const el = await render(plugin({ status: 'running', manifest_error: message, last_error: message }));
    const note = el.querySelector('[data-testid=manifest-error]');
    expect(note?.textContent).toContain('Running an older version: the manifest has an error');
    expect(note?.textContent).toContain('spec.config.startupDelayMs');
  });

  it('a plugin with a valid manifest shows no manifest note', async () => {
    const el = await render(plugin({ status: 'running' }));
    expect(el.querySelector('[data-testid=manifest-error]')).toBeNull();
  });

  it('allowed actions per status', () => {
    expect(allowedActions({ status: 'stopped' })).toEqual({ start: true, stop: false, restart: false });
    expect(allowedActions({ status: 'stopping' })).toEqual({ start: false, stop: false, restart: false });
    expect(allowedActions({ status: 'error' })).toEqual({ start: true, stop: true, restart: true });
  });
});
