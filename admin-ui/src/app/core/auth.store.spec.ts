import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from './api.service';
import { AuthStore } from './auth.store';
import { SessionKey } from './session-key';
import { fakeFetch, plugin } from './testing';

describe('AuthStore', () => {
  const realFetch = globalThis.fetch;
  afterEach(() => {
    globalThis.fetch = realFetch;
    sessionStorage.clear();
  });

  function setup(routes: Parameters<typeof fakeFetch>[0]) {
    const fake = fakeFetch(routes);
    globalThis.fetch = fake.fn;
    TestBed.configureTestingModule({ providers: [provideRouter([{ path: 'sign-in', children: [] }])] });
    return { fake, auth: TestBed.inject(AuthStore), session: TestBed.inject(SessionKey) };
  }

  it('signs in with a key the gateway knows, keeping it in sessionStorage', async () => {
    const { fake, auth } = setup({ 'GET /api/whoami': () => ({ status: 200, body: { key_id: 'ops', scopes: ['read'] } }) });
    expect(await auth.signIn('  bkg_good  ')).toBe(true);
    expect(fake.calls[0].headers['authorization']).toBe('Bearer bkg_good');
    expect(sessionStorage.getItem('bkg.apiKey')).toBe('bkg_good');
    expect(auth.signedIn()).toBe(true);
    expect(auth.keyId()).toBe('ops');
    expect(auth.canRead()).toBe(true);
    expect(auth.canAdmin()).toBe(false);
    expect(auth.canInvokeAny()).toBe(false);
  });

  it('refuses an unknown key with a clear message and keeps nothing', async () => {
    const { auth } = setup({
      'GET /api/whoami': () => ({ status: 401, body: { type: 'x', title: 'Unauthorized', status: 401, detail: 'unknown API key' } }),
    });
    expect(await auth.signIn('bkg_bad')).toBe(false);
    expect(auth.error()).toMatch(/refused.*401/);
    expect(sessionStorage.getItem('bkg.apiKey')).toBeNull();
    expect(auth.signedIn()).toBe(false);
  });

  it('says when the gateway cannot be reached', async () => {
    globalThis.fetch = (async () => {
      throw new TypeError('Failed to fetch');
    }) as typeof fetch;
    TestBed.configureTestingModule({ providers: [provideRouter([{ path: 'sign-in', children: [] }])] });
    const auth = TestBed.inject(AuthStore);
    expect(await auth.signIn('k')).toBe(false);
    expect(auth.error()).toMatch(/unreachable/i);
  });

  it('works with a gateway that has no whoami (auth not enabled)', async () => {
    const { auth } = setup({ 'GET /api/plugins': () => ({ status: 200, body: [plugin()] }) });
    expect(await auth.signIn('anything')).toBe(true);
    expect(auth.authless()).toBe(true);
    expect(auth.canAdmin()).toBe(true);
  });

  it('signs out: the key is gone', async () => {
    const { auth } = setup({ 'GET /api/whoami': () => ({ status: 200, body: { key_id: 'a', scopes: ['admin'] } }) });
    await auth.signIn('k');
    auth.signOut();
    expect(sessionStorage.getItem('bkg.apiKey')).toBeNull();
    expect(auth.signedIn()).toBe(false);
    expect(auth.scopes()).toEqual([]);
  });

  it('a 401 on a later call ends the session with a message', async () => {
    const { auth, session } = setup({
      'GET /api/whoami': () => ({ status: 200, body: { key_id: 'a', scopes: ['admin'] } }),
      'GET /api/plugins': () => ({ status: 401, body: { title: 'Unauthorized', status: 401, detail: 'key revoked' } }),
    });
    await auth.signIn('k');
    await expect(TestBed.inject(ApiService).plugins()).rejects.toThrow();
    expect(session.key()).toBeNull();
    expect(auth.signedIn()).toBe(false);
    expect(session.notice()).toMatch(/key revoked/);
  });
});
