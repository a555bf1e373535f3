import { ComponentFixture, TestBed } from '@angular/core/testing';
import { PluginInfo } from '../core/models';
import { instance, plugin, scaledPlugin } from '../core/testing';
import { ScalingPanel } from './scaling-panel';

describe('ScalingPanel', () => {
  let fixture: ComponentFixture<ScalingPanel>;

  async function render(p: PluginInfo) {
    TestBed.configureTestingModule({ imports: [ScalingPanel] });
    fixture = TestBed.createComponent(ScalingPanel);
    fixture.componentRef.setInput('plugin', p);
    await fixture.whenStable();
    return fixture.nativeElement as HTMLElement;
  }
  const text = (el: HTMLElement, id: string) => el.querySelector(`[data-testid=${id}]`)?.textContent?.replace(/\s+/g, ' ').trim();

  it('an autoscaled plugin: owner, min/current/wanted/max, gauge and scale-to-zero', async () => {
    const p = scaledPlugin({
      replicas: 3,
      ready_replicas: 1,
      instances: [instance({ name: 'a' }), instance({ name: 'b', state: 'starting', ready: false }), instance({ name: 'c', state: 'stopping' })],
    });
    const el = await render(p);
    expect(text(el, 'scaling-owner')).toBe('bkg autoscaler, in-flight target 2 per replica');
    expect(text(el, 'scale-min')).toBe('0');
    expect(text(el, 'scale-current')).toBe('2 (1 ready)');
    expect(text(el, 'scale-wanted')).toBe('3');
    expect(text(el, 'scale-max')).toBe('4');
    const gauge = el.querySelector('[role=meter]')!;
    expect(gauge.getAttribute('aria-label')).toBe('Replicas');
    expect(gauge.getAttribute('aria-valuenow')).toBe('2');
    expect(gauge.getAttribute('aria-valuemax')).toBe('4');
    expect(gauge.getAttribute('aria-valuetext')).toBe('2 current (1 ready), 3 wanted, autoscaled between 0 and 4');
    expect((el.querySelector('[data-testid=scale-wanted-mark]') as HTMLElement).style.left).toBe('calc(75% - 1px)');
    expect(text(el, 'scaling-notes')).toContain('Scales to zero after 60 s idle.');
    expect(text(el, 'scaling-notes')).toContain('Waits 30 s of lower load before scaling down.');
  });

  it('a CPU-driven plugin names the HPA and does not scale to zero', async () => {
    const el = await render(scaledPlugin({ scaling_owner: 'hpa', replicas: 1 }, { metric: 'cpu', target: 70, min_replicas: 1 }));
    expect(text(el, 'scaling-owner')).toBe('HorizontalPodAutoscaler, CPU target 70 %');
    expect(text(el, 'scaling-notes')).not.toContain('zero');
  });

  it('a fixed count: owner spec.replicas, no bounds, no notes', async () => {
    const el = await render(plugin({ replicas: 2, ready_replicas: 2, instances: [instance(), instance({ name: 'echo-1' })] }));
    expect(text(el, 'scaling-owner')).toBe('fixed by spec.replicas (kubectl scale)');
    expect(text(el, 'scale-min')).toBe('—');
    expect(text(el, 'scale-max')).toBe('—');
    expect(text(el, 'scale-current')).toBe('2 (2 ready)');
    expect(el.querySelector('[data-testid=scaling-notes]')).toBeNull();
    expect(text(el, 'scale-history')).toBe('No change of the replica count yet.');
  });

  it('the timeline lists changes newest first, and follows a new plugin state', async () => {
    const el = await render(
      scaledPlugin({
        replicas: 1,
        scale_history: [{ time: '2026-12-05T12:00:00Z', from: 0, to: 1, reason: 'activation: 1 held request' }],
      }),
    );
    expect([...el.querySelectorAll('[data-testid=scale-event]')].length).toBe(1);
    // a status push replaces the plugin: the section redraws from it
    fixture.componentRef.setInput(
      'plugin',
      scaledPlugin({
        replicas: 3,
        scale_history: [
          { time: '2026-12-05T12:00:00Z', from: 0, to: 1, reason: 'activation: 1 held request' },
          { time: '2026-12-05T12:00:05.5Z', from: 1, to: 3, reason: '5 in flight, target 2' },
        ],
      }),
    );
    await fixture.whenStable();
    const events = [...el.querySelectorAll('[data-testid=scale-event]')];
    expect(events.map((e) => [...e.querySelectorAll('span')].map((s) => s.textContent!.trim()).join(' '))).toEqual([
      '1 → 3 5 in flight, target 2',
      '0 → 1 activation: 1 held request',
    ]);
    expect(events[0].querySelector('time')!.getAttribute('datetime')).toBe('2026-12-05T12:00:05.5Z');
    expect(text(el, 'scale-wanted')).toBe('3');
    expect(text(el, 'scale-current')).toBe('3 (3 ready)');
  });
});
