import { Instance, PluginInfo, ScalingInfo, Telemetry } from './models';

export function plugin(over: Partial<PluginInfo> = {}): PluginInfo {
  return {
    id: 'echo',
    name: 'Echo',
    version: '0.1.0',
    description: 'Returns what it is sent',
    author: 'bkg',
    implementation: 'echo',
    status: 'running',
    enabled: true,
    replicas: 1,
    ready_replicas: 1,
    scaling_owner: 'replicas',
    capabilities: [
      { id: 'echo', name: 'Echo', description: '', input_schema: { type: 'object' }, output_schema: { type: 'object' } },
    ],
    config: { greeting: 'hello' },
    resources: { timeout_secs: 10, max_concurrency: 8, gpu_count: 0 },
    instances: [],
    ...over,
  };
}

/** An autoscaled plugin (bkg autoscaler, 0 to 4 replicas, 2 in flight per replica), now at `replicas`. */
export function scaledPlugin(over: Partial<PluginInfo> = {}, scaling: Partial<ScalingInfo> = {}): PluginInfo {
  const replicas = over.replicas ?? 0;
  return plugin({
    id: 'echo-auto',
    name: 'Echo autoscaled',
    replicas,
    ready_replicas: replicas,
    instances: Array.from({ length: replicas }, (_, i) => instance({ name: `echo-auto-${i}` })),
    scaling_owner: 'autoscaler',
    scaling: {
      min_replicas: 0,
      max_replicas: 4,
      metric: 'inFlight',
      target: 2,
      scale_down_delay_seconds: 30,
      scale_to_zero_after_seconds: 60,
      ...scaling,
    },
    scale_history: [],
    ...over,
  });
}

export function instance(over: Partial<Instance> = {}): Instance {
  return { name: 'echo-0', state: 'running', ready: true, restarts: 0, pid: 1234, ...over };
}

export function telemetry(over: Partial<Telemetry> = {}): Telemetry {
  return {
    plugin_id: 'echo',
    cpu_percent: 1.5,
    memory_mb: 12,
    uptime_secs: 90,
    request_count: 10,
    error_count: 1,
    replicas: 1,
    ...over,
  };
}

/** A fetch stub answering by "METHOD path". */
export function fakeFetch(routes: Record<string, (init?: RequestInit) => { status: number; body?: unknown }>) {
  const calls: { method: string; path: string; headers: Record<string, string>; body?: string }[] = [];
  const fn = async (input: RequestInfo | URL, init?: RequestInit) => {
    const method = init?.method ?? 'GET';
    const path = String(input);
    calls.push({ method, path, headers: (init?.headers ?? {}) as Record<string, string>, body: init?.body as string });
    const route = routes[`${method} ${path}`];
    if (!route) return new Response(JSON.stringify({ title: 'Not found', status: 404, detail: path }), { status: 404 });
    const { status, body } = route(init);
    return new Response(body === undefined ? '' : JSON.stringify(body), {
      status,
      headers: { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' },
    });
  };
  return { fn: fn as typeof fetch, calls };
}

/** A body that delivers `chunks` one read at a time (strings as UTF-8, or raw bytes). */
export function streamOf(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i === chunks.length) return controller.close();
      const c = chunks[i++];
      controller.enqueue(typeof c === 'string' ? enc.encode(c) : c);
    },
  });
}

/**
 * A streamed answer the test writes to as it goes, as `fetch` gives it: aborting `signal` errors the
 * body with an AbortError, as browsers do.
 */
export function liveStream(signal?: AbortSignal | null) {
  const enc = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  let cancelled = false;
  signal?.addEventListener('abort', () => {
    if (!cancelled) controller.error(new DOMException('The operation was aborted.', 'AbortError'));
    cancelled = true;
  });
  return {
    body,
    get aborted() {
      return cancelled;
    },
    write(text: string) {
      controller.enqueue(enc.encode(text));
    },
    close() {
      controller.close();
    },
  };
}

/** One OpenAI chat.completion.chunk as an SSE event. */
export function chunk(delta: { role?: string; content?: string }, finish: string | null = null): string {
  return `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'llm', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
}

/** The last chunk of a stream with include_usage. */
export function usageChunk(prompt: number, completion: number): string {
  return `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'llm', choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } })}\n\n`;
}
