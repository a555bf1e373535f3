import { Injectable, inject } from '@angular/core';
import { ApiError } from './api-error';
import { ChatError, ChatEvent, ChatRequest, chatErrorFromBody, chatEvents, isAbort } from './chat';
import { CreateKey, CreatedKey, KeyInfo, Logs, Overview, PluginAction, PluginInfo, Telemetry, TelemetryHistory, WhoAmI } from './models';
import { SessionKey } from './session-key';

/** Thin client of the gateway's REST API. Every failure is thrown as an ApiError. */
@Injectable({ providedIn: 'root' })
export class ApiService {
  private readonly session = inject(SessionKey);

  whoami(key?: string): Promise<WhoAmI> {
    return this.request<WhoAmI>('GET', '/api/whoami', undefined, key);
  }

  plugins(): Promise<PluginInfo[]> {
    return this.request('GET', '/api/plugins');
  }

  plugin(id: string): Promise<PluginInfo> {
    return this.request('GET', `/api/plugins/${encodeURIComponent(id)}`);
  }

  action(id: string, action: PluginAction): Promise<PluginInfo> {
    return this.request('POST', `/api/plugins/${encodeURIComponent(id)}/${action}`);
  }

  setConfig(id: string, config: unknown): Promise<PluginInfo> {
    return this.request('POST', `/api/plugins/${encodeURIComponent(id)}/config`, config);
  }

  telemetry(id: string): Promise<Telemetry> {
    return this.request('GET', `/api/plugins/${encodeURIComponent(id)}/telemetry`);
  }

  /** The gateway's samples of the last 10 minutes and the plugin's recent events. */
  history(id: string): Promise<TelemetryHistory> {
    return this.request('GET', `/api/plugins/${encodeURIComponent(id)}/telemetry/history`);
  }

  /** Every plugin together over the last 10 minutes, and each plugin's sparkline. */
  overview(): Promise<Overview> {
    return this.request('GET', '/api/overview');
  }

  logs(id: string, lines = 200): Promise<Logs> {
    return this.request('GET', `/api/plugins/${encodeURIComponent(id)}/logs?lines=${lines}`);
  }

  invoke(id: string, capability: string, payload: unknown): Promise<unknown> {
    return this.request('POST', `/api/plugins/${encodeURIComponent(id)}/invoke`, { capability, payload });
  }

  /**
   * An invoke with a file, as `multipart/form-data`: the gateway puts the file part in the property the
   * capability declares for its media type (base64) and types the other fields by the input schema.
   */
  invokeFile(id: string, capability: string, file: Blob, filename: string, fields: [string, string][]): Promise<unknown> {
    const form = new FormData();
    for (const [name, value] of fields) form.append(name, value);
    form.append('file', file, filename);
    return this.request('POST', `/api/plugins/${encodeURIComponent(id)}/invoke?capability=${encodeURIComponent(capability)}`, form);
  }

  /**
   * `POST /v1/chat/completions` streamed: the answer's events as they arrive. Throws a ChatError (the
   * OpenAI error's message) for a refused call or an error event, and the AbortError of `signal`.
   */
  async *chat(body: ChatRequest, signal?: AbortSignal): AsyncGenerator<ChatEvent> {
    const headers: Record<string, string> = { accept: 'text/event-stream', 'content-type': 'application/json' };
    const token = this.session.key();
    if (token) headers['authorization'] = `Bearer ${token}`;
    let response: Response;
    try {
      response = await fetch('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body), signal });
    } catch (e) {
      if (isAbort(e)) throw e;
      throw new ChatError(`Gateway unreachable: ${e instanceof Error ? e.message : String(e)}`, 0);
    }
    if (!response.ok) {
      const error = chatErrorFromBody(response.status, response.statusText, await response.text());
      if (response.status === 401) this.session.expired(error.message);
      throw error;
    }
    if (!response.body || !(response.headers.get('content-type') ?? '').includes('text/event-stream')) {
      const text = await response.text();
      throw new ChatError(`Expected a text/event-stream answer, got ${response.headers.get('content-type') ?? 'no content type'}: ${text.slice(0, 200)}`, response.status);
    }
    yield* chatEvents(response.body);
  }

  keys(): Promise<KeyInfo[]> {
    return this.request('GET', '/api/keys');
  }

  createKey(key: CreateKey): Promise<CreatedKey> {
    return this.request('POST', '/api/keys', key);
  }

  revokeKey(id: string): Promise<void> {
    return this.request('DELETE', `/api/keys/${encodeURIComponent(id)}`);
  }

  async request<T>(method: string, path: string, body?: unknown, key?: string): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    const token = key ?? this.session.key();
    if (token) headers['authorization'] = `Bearer ${token}`;
    // A form sets its own content type (with the boundary).
    const form = body instanceof FormData;
    if (body !== undefined && !form) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : form ? body : JSON.stringify(body),
      });
    } catch (e) {
      throw ApiError.network(e instanceof Error ? e.message : String(e));
    }
    const text = await response.text();
    if (!response.ok) {
      const error = ApiError.fromBody(response.status, response.statusText, text);
      // A stored key that stops working ends the session (not the key being tried at sign-in).
      if (response.status === 401 && key === undefined) this.session.expired(error.problem.detail);
      throw error;
    }
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw ApiError.fromBody(502, 'Invalid JSON from gateway', text);
    }
  }
}
