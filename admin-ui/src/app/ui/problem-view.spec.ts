import { TestBed } from '@angular/core/testing';
import { ApiError } from '../core/api-error';
import { ProblemView } from './problem-view';

describe('ProblemView', () => {
  it('renders a problem+json with its schema errors and request id', async () => {
    TestBed.configureTestingModule({ imports: [ProblemView] });
    const fixture = TestBed.createComponent(ProblemView);
    const body = {
      type: 'https://bkg.rs/problems/invalid-payload',
      title: 'Payload violates the input schema',
      status: 400,
      detail: 'payload does not match the input schema of "sleep"',
      request_id: 'req-1',
      errors: [{ field: '/ms', message: '"soon" is not of type "integer"' }],
    };
    fixture.componentRef.setInput('error', ApiError.fromBody(400, 'Bad Request', JSON.stringify(body)));
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    expect(el.querySelector('[role=alert]')).not.toBeNull();
    expect(el.textContent).toContain('Payload violates the input schema (400)');
    expect(el.textContent).toContain('/ms');
    expect(el.textContent).toContain('is not of type "integer"');
    expect(el.textContent).toContain('req-1');
  });

  it('explains an unreachable gateway and a 403', async () => {
    TestBed.configureTestingModule({ imports: [ProblemView] });
    const fixture = TestBed.createComponent(ProblemView);
    fixture.componentRef.setInput('error', ApiError.network('Failed to fetch'));
    await fixture.whenStable();
    expect((fixture.nativeElement as HTMLElement).textContent).toContain('Is the gateway running?');
    fixture.componentRef.setInput('error', ApiError.fromBody(403, 'Forbidden', 'nope'));
    await fixture.whenStable();
    expect((fixture.nativeElement as HTMLElement).textContent).toContain('does not carry the scope');
  });
});
