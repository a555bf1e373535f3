import { computed, inject } from '@angular/core';
import { patchState, signalStore, withComputed, withMethods, withProps, withState } from '@ngrx/signals';
import { ApiError, describeError } from './api-error';
import { ApiService } from './api.service';
import { Scope } from './models';
import { canInvoke, canInvokeSomething, canRead, isAdmin } from './scopes';
import { SessionKey } from './session-key';

interface AuthState {
  keyId: string | null;
  scopes: Scope[];
  verified: boolean;
  checking: boolean;
  error: string | null;
  /** The gateway has no /api/whoami (auth not enabled): every control is shown. */
  authless: boolean;
}

const initial: AuthState = {
  keyId: null,
  scopes: [],
  verified: false,
  checking: false,
  error: null,
  authless: false,
};

export const AuthStore = signalStore(
  { providedIn: 'root' },
  withState(initial),
  withProps(() => ({ _api: inject(ApiService), _session: inject(SessionKey) })),
  withComputed((store) => {
    return {
      signedIn: computed(() => store._session.key() !== null && store.verified()),
      hasKey: computed(() => store._session.key() !== null),
      canRead: computed(() => canRead(store.scopes())),
      canAdmin: computed(() => isAdmin(store.scopes())),
      canInvokeAny: computed(() => canInvokeSomething(store.scopes())),
      notice: computed(() => store._session.notice()),
    };
  }),
  withMethods((store) => {
    async function verify(key: string): Promise<boolean> {
      patchState(store, { checking: true, error: null });
      try {
        const me = await store._api.whoami(key);
        patchState(store, {
          keyId: me.key_id,
          scopes: me.scopes ?? [],
          verified: true,
          checking: false,
          authless: false,
        });
        return true;
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          // A gateway without auth: check the key can list plugins, then allow everything.
          try {
            await store._api.request('GET', '/api/plugins', undefined, key);
            patchState(store, {
              keyId: 'gateway without authentication',
              scopes: ['read', 'invoke', 'admin'],
              verified: true,
              checking: false,
              authless: true,
            });
            return true;
          } catch (inner) {
            e = inner;
          }
        }
        const message =
          e instanceof ApiError && e.status === 401
            ? 'This API key was refused by the gateway (401 Unauthorized). Check the key and try again.'
            : e instanceof ApiError && e.status === 403
              ? 'This API key is valid but may not read plugins (403 Forbidden).'
              : describeError(e);
        patchState(store, { ...initial, error: message });
        return false;
      }
    }
    return {
      /** Checks a key with the gateway; keeps it for this tab when accepted. */
      async signIn(key: string): Promise<boolean> {
        const trimmed = key.trim();
        if (!trimmed) {
          patchState(store, { error: 'Enter an API key.' });
          return false;
        }
        const ok = await verify(trimmed);
        if (ok) store._session.set(trimmed);
        return ok;
      },
      /** Re-checks the key kept in sessionStorage (page reload). */
      async restore(): Promise<boolean> {
        const key = store._session.key();
        if (key === null) return false;
        if (store.verified()) return true;
        const ok = await verify(key);
        if (!ok) {
          store._session.clear();
          store._session.notice.set(store.error());
        }
        return ok;
      },
      canInvoke(plugin: string, capability?: string): boolean {
        return canInvoke(store.scopes(), plugin, capability);
      },
      signOut(): void {
        store._session.clear();
        store._session.notice.set(null);
        patchState(store, initial);
      },
      /** The session ended (401 elsewhere): forget what we knew. */
      reset(): void {
        patchState(store, initial);
      },
    };
  }),
);
