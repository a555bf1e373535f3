import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { KeyInfo } from '../core/models';
import { KeysPage } from './keys';

// A gateway older than the token accounting sends no `usage`: the cast lets a test leave it out.
const key = (id: string, extra: Partial<KeyInfo> = {}): KeyInfo => ({ id, scopes: ['read'], expired: false, source: 'file', ...extra }) as KeyInfo;

describe('KeysPage', () => {
  let api: Record<string, ReturnType<typeof vi.fn>>;

  async function render() {
    api = {
      plugins: vi.fn().mockResolvedValue([]),
      whoami: vi.fn().mockResolvedValue({ key_id: 'ops', scopes: ['admin'] }),
      keys: vi.fn().mockResolvedValue([
        key('ops', { scopes: ['admin'], usage: { prompt_tokens: 1234, completion_tokens: 56 }, tokens_per_minute: 6000 }),
        key('ci', { expires_at: '2001-01-01T00:00:00Z', expired: true, usage: { prompt_tokens: 0, completion_tokens: 0 }, tokens_per_minute: null }),
        key('bootstrap', { source: 'env' }),
      ]),
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

  it("shows each key's token usage and limit, and only what the gateway sent", async () => {
    const { el } = await render();
    const cell = (id: string, testid: string) => el.querySelector(`[data-key="${id}"] [data-testid=${testid}]`)!.textContent!.replace(/\s+/g, ' ').trim();
    expect(cell('ops', 'key-usage')).toMatch(/^1,234 prompt\s*56 completion$/);
    expect(cell('ops', 'key-tpm')).toBe('6,000/min');
    expect(cell('ci', 'key-usage')).toMatch(/^0 prompt\s*0 completion$/);
    expect(cell('ci', 'key-tpm')).toBe('none');
    // A gateway that does not report usage: no made-up zeros.
    expect(cell('bootstrap', 'key-usage')).toBe('not reported');
  });

  it('creates a key with a tokens-per-minute limit, and the form refuses one that is not a whole number', async () => {
    const { el, settle } = await render();
    api['createKey'].mockResolvedValue({ id: 'llm', key: 'bkg_secret', scopes: ['read'], created_at: '2026-01-01T00:00:00Z' });
    const type = (testid: string, value: string) => {
      const input = el.querySelector(`[data-testid=${testid}]`) as HTMLInputElement;
      input.value = value;
      input.dispatchEvent(new Event('input'));
    };
    type('key-id', 'llm');
    type('key-tpm-input', '2.5');
    (el.querySelector('[data-testid=key-create]') as HTMLButtonElement).click();
    await settle();
    // The field's own constraints (step 1, min 1) stop the form.
    expect((el.querySelector('[data-testid=key-tpm-input]') as HTMLInputElement).validity.valid).toBe(false);
    expect(api['createKey']).not.toHaveBeenCalled();
    type('key-tpm-input', '1000');
    (el.querySelector('[data-testid=key-create]') as HTMLButtonElement).click();
    await settle();
    expect(api['createKey']).toHaveBeenCalledWith({ id: 'llm', scopes: ['read'], expires_at: undefined, description: undefined, tokens_per_minute: 1000 });
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
