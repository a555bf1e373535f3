import { TestBed } from '@angular/core/testing';
import { Router, provideRouter } from '@angular/router';
import { fakeFetch } from '../core/testing';
import { SignInPage } from './sign-in';

describe('SignInPage', () => {
  const realFetch = globalThis.fetch;
  afterEach(() => {
    globalThis.fetch = realFetch;
    sessionStorage.clear();
  });

  async function render(routes: Parameters<typeof fakeFetch>[0]) {
    globalThis.fetch = fakeFetch(routes).fn;
    TestBed.configureTestingModule({ imports: [SignInPage], providers: [provideRouter([])] });
    const fixture = TestBed.createComponent(SignInPage);
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    const input = el.querySelector('input#api-key') as HTMLInputElement;
    const submit = async (key: string) => {
      input.value = key;
      input.dispatchEvent(new Event('input'));
      (el.querySelector('form') as HTMLFormElement).dispatchEvent(new Event('submit'));
      await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
    };
    return { fixture, el, submit };
  }

  it('has a labelled password field', async () => {
    const { el } = await render({});
    const label = el.querySelector('label[for=api-key]');
    expect(label?.textContent).toContain('API key');
    expect((el.querySelector('#api-key') as HTMLInputElement).type).toBe('password');
  });

  it('shows a clear message for a refused key', async () => {
    const { el, submit } = await render({
      'GET /api/whoami': () => ({ status: 401, body: { title: 'Unauthorized', status: 401, detail: 'unknown key' } }),
    });
    await submit('bkg_wrong');
    expect(el.querySelector('[data-testid=sign-in-error]')?.textContent).toMatch(/refused/);
  });

  it('goes to the dashboard when the key is accepted', async () => {
    const { submit } = await render({
      'GET /api/whoami': () => ({ status: 200, body: { key_id: 'ops', scopes: ['read'] } }),
    });
    const router = TestBed.inject(Router);
    const nav = vi.spyOn(router, 'navigate').mockResolvedValue(true);
    await submit('bkg_ok');
    expect(nav).toHaveBeenCalledWith(['/']);
    expect(sessionStorage.getItem('bkg.apiKey')).toBe('bkg_ok');
  });
});
