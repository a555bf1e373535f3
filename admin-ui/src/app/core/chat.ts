// The gateway's OpenAI-compatible chat route, `POST /v1/chat/completions` with `stream: true`, read as
// server-sent events. These shapes are OpenAI's (the gateway's OpenAPI document does not describe
// that route), so they are written here.
import { SseEvent, readSse } from './sse';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Sampling parameters; an absent one is the plugin's default. */
export interface SamplingParams {
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  seed?: number;
  stop?: string[];
}

export interface ChatRequest extends SamplingParams {
  /** The plugin id. */
  model: string;
  messages: ChatMessage[];
  stream: true;
  stream_options: { include_usage: true };
}

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}

/** OpenAI's error object: the body `{"error": …}` of a refused call, or a `data: {"error": …}` event. */
export interface OpenAiError {
  message: string;
  type?: string | null;
  param?: string | null;
  code?: string | number | null;
}

/** What the stream tells, in order: text deltas, a finish reason, the usage, the end. */
export type ChatEvent =
  | { kind: 'delta'; content: string }
  | { kind: 'finish'; reason: string }
  | { kind: 'usage'; usage: TokenUsage }
  | { kind: 'done' };

/** A chat call that failed: `status` 0 when the gateway could not be reached, 200 for an error event mid-stream. */
export class ChatError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly error?: OpenAiError,
  ) {
    super(message);
    this.name = 'ChatError';
  }
}

export function chatRequest(model: string, messages: ChatMessage[], params: SamplingParams): ChatRequest {
  return { model, messages, ...params, stream: true, stream_options: { include_usage: true } };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function openAiError(v: unknown): OpenAiError | null {
  if (!isObject(v) || !isObject(v['error'])) return null;
  const e = v['error'];
  const message = typeof e['message'] === 'string' && e['message'] ? e['message'] : 'The gateway reported an error without a message.';
  return { message, type: e['type'] as string, param: e['param'] as string, code: e['code'] as string };
}

/** A usage object only when both counts are numbers: the UI never shows counts it did not receive. */
function usage(v: unknown): TokenUsage | null {
  if (!isObject(v)) return null;
  const { prompt_tokens, completion_tokens, total_tokens } = v;
  if (typeof prompt_tokens !== 'number' || typeof completion_tokens !== 'number') return null;
  return typeof total_tokens === 'number' ? { prompt_tokens, completion_tokens, total_tokens } : { prompt_tokens, completion_tokens };
}

/**
 * The error of a refused call (no stream): OpenAI's `{"error": {message}}`, else a problem+json's detail
 * (the gateway's auth layer answers that way), else the text itself.
 */
export function chatErrorFromBody(status: number, statusText: string, text: string): ChatError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  const error = openAiError(parsed);
  if (error) return new ChatError(error.message, status, error);
  if (isObject(parsed) && (typeof parsed['detail'] === 'string' || typeof parsed['title'] === 'string')) {
    const { title, detail } = parsed as { title?: string; detail?: string };
    return new ChatError(detail ? (title ? `${title}: ${detail}` : detail) : title!, status);
  }
  return new ChatError(text.trim().slice(0, 500) || statusText || `HTTP ${status}`, status);
}

/** Turns one SSE event into chat events; throws the error event as a ChatError. */
export function chatEventsOf(event: SseEvent): ChatEvent[] | 'done' {
  const data = event.data.trim();
  if (data === '[DONE]') return 'done';
  let chunk: unknown;
  try {
    chunk = JSON.parse(data);
  } catch {
    throw new ChatError(`The stream carried an event that is not JSON: ${data.slice(0, 200)}`, 200);
  }
  const error = openAiError(chunk);
  if (error) throw new ChatError(error.message, 200, error);
  if (!isObject(chunk)) return [];
  const out: ChatEvent[] = [];
  const choices = Array.isArray(chunk['choices']) ? chunk['choices'] : [];
  for (const choice of choices) {
    if (!isObject(choice) || (choice['index'] ?? 0) !== 0) continue;
    const delta = choice['delta'];
    if (isObject(delta) && typeof delta['content'] === 'string' && delta['content']) out.push({ kind: 'delta', content: delta['content'] });
    if (typeof choice['finish_reason'] === 'string') out.push({ kind: 'finish', reason: choice['finish_reason'] });
  }
  const u = usage(chunk['usage']);
  if (u) out.push({ kind: 'usage', usage: u });
  return out;
}

/** The chat events of a streamed answer's body, up to `data: [DONE]`. */
export async function* chatEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ChatEvent> {
  for await (const event of readSse(body)) {
    const events = chatEventsOf(event);
    if (events === 'done') {
      yield { kind: 'done' };
      return;
    }
    yield* events;
  }
  throw new ChatError('The stream ended before data: [DONE]; the answer may be incomplete.', 200);
}

/** Whether an error is the abort of our own AbortController (the Stop button). */
export function isAbort(e: unknown): boolean {
  return (e instanceof DOMException || e instanceof Error) && e.name === 'AbortError';
}

/** The sampling form as typed: empty fields are the plugin's defaults. */
export interface SamplingForm {
  temperature: string;
  top_p: string;
  max_tokens: string;
  seed: string;
  /** One stop sequence per line. */
  stop: string;
}

export const EMPTY_SAMPLING: SamplingForm = { temperature: '', top_p: '', max_tokens: '', seed: '', stop: '' };

/** Checks the form the way OpenAI's API bounds it; an error names the field. */
export function parseSampling(form: SamplingForm): { params: SamplingParams } | { error: string } {
  const params: SamplingParams = {};
  const num = (name: keyof SamplingForm, min: number, max: number, integer: boolean): number | string | undefined => {
    const text = form[name].trim();
    if (!text) return undefined;
    const n = Number(text);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) return `${name} must be ${integer ? 'a whole number' : 'a number'}.`;
    if (n < min || n > max) return `${name} must be between ${min} and ${max}.`;
    return n;
  };
  const fields: [keyof SamplingForm & keyof SamplingParams, number, number, boolean][] = [
    ['temperature', 0, 2, false],
    ['top_p', 0, 1, false],
    ['max_tokens', 1, 1_000_000, true],
    ['seed', -(2 ** 53 - 1), 2 ** 53 - 1, true],
  ];
  for (const [name, min, max, integer] of fields) {
    const v = num(name, min, max, integer);
    if (typeof v === 'string') return { error: v };
    if (v !== undefined) (params as Record<string, number>)[name] = v;
  }
  // Stop sequences are taken as typed (a leading space can matter); only empty lines are dropped.
  const stop = form.stop.split('\n').filter((s) => s.length > 0);
  if (stop.length > 4) return { error: 'stop takes at most 4 sequences.' };
  if (stop.length) params.stop = stop;
  return { params };
}
