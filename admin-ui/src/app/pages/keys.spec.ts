import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { KeyInfo } from '../core/models';
import { KeysPage } from './keys';

const key = (id: string, extra: Partial<KeyInfo> = {}): KeyInfo => ({ id, scopes: ['read'], expired: false, source: 'file', ...extra });

describe('KeysPage', () => {
  let api: Record<string, ReturnType<typeof vi.fn>>;

  async function render() {
    api = {
      plugins: vi.fn().mockResolvedValue([]),
      whoami: vi.fn().mockResolvedValue({ key_id: 'ops', scopes: ['admin'] }),
      keys: vi.fn().mockResolvedValue([key('ops', { scopes: ['admin'] }), key('ci', { expires_at: '2001-01-01T00:00:00Z', expired: true }), key('bootstrap', { source: 'env' })]),
      createKey: vi.fn(),
      revokeKey: vi.fn().mockResolvedValue(undefined),
    };
    TestBed.configureTestingModule({
      imports: [KeysPage],
      providers: [provideRouter([]), { provide: ApiService, useValue: api }],
    });
    await TestBed.inject(AuthStore).signIn('k');
    const fixture = TestBed.createComponent(KeysPage);
    await fixture.whenStable();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    const settle = async () => {
      await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
    };
    return { el, settle };
  }

  it('lists keys; only file keys other than the caller can be revoked', async () => {
    const { el } = await render();
    const row = (id: string) => el.querySelector(`[data-key="${id}"]`)!;
    expect(el.querySelectorAll('[data-testid=key-row]').length).toBe(3);
    expect(row('ops').textContent).toContain('this session');
    expect(row('ops').querySelector('[data-testid=key-revoke]')).toBeNull();
    expect(row('bootstrap').querySelector('[data-testid=key-revoke]')).toBeNull();
    expect(row('ci').textContent).toContain('expired');
    expect(row('ci').querySelector('[data-testid=key-last-used]')!.textContent).toContain('never');
  });

  it('creates a key and shows its secret once; revokes only after confirmation', async () => {
    const { el, settle } = await render();
    api['createKey'].mockResolvedValue({ id: 'new', key: 'bkg_secret', scopes: ['read', 'invoke'], created_at: '2026-01-01T00:00:00Z' });
    const id = el.querySelector('[data-testid=key-id]') as HTMLInputElement;
    id.value = 'new';
    id.dispatchEvent(new Event('input'));
    (el.querySelector('[data-testid=key-scope-invoke]') as HTMLInputElement).click();
    (el.querySelector('[data-testid=key-create]') as HTMLButtonElement).click();
    await settle();
    expect(api['createKey']).toHaveBeenCalledWith({ id: 'new', scopes: ['read', 'invoke'], expires_at: undefined, description: undefined });
    expect((el.querySelector('[data-testid=key-secret]') as HTMLInputElement).value).toBe('bkg_secret');

    (el.querySelector('[data-key=ci] [data-testid=key-revoke]') as HTMLButtonElement).click();
    await settle();
    expect(api['revokeKey']).not.toHaveBeenCalled();
    (el.querySelector('[data-key=ci] [data-testid=key-revoke-confirm]') as HTMLButtonElement).click();
    await settle();
    expect(api['revokeKey']).toHaveBeenCalledWith('ci');
  });
});
