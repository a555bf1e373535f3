import { Injectable, inject, signal } from '@angular/core';
import { Router } from '@angular/router';

const STORAGE_KEY = 'bkg.apiKey';

function storage(): Storage | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}

/** The API key of this browser tab: kept in sessionStorage, so it dies with the tab. */
@Injectable({ providedIn: 'root' })
export class SessionKey {
  private readonly router = inject(Router);
  readonly key = signal<string | null>(storage()?.getItem(STORAGE_KEY) ?? null);
  /** Why the last session ended without the user asking (shown on the sign-in page). */
  readonly notice = signal<string | null>(null);

  set(key: string): void {
    storage()?.setItem(STORAGE_KEY, key);
    this.key.set(key);
    this.notice.set(null);
  }

  clear(): void {
    storage()?.removeItem(STORAGE_KEY);
    this.key.set(null);
  }

  /** The gateway refused the stored key (401): back to sign-in with a message. */
  expired(detail?: string): void {
    if (this.key() === null) return;
    this.clear();
    this.notice.set(
      `The gateway refused your API key${detail ? `: ${detail}` : ''}. Please sign in again.`,
    );
    void this.router.navigate(['/sign-in']);
  }
}
