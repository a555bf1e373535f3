/** Connection state of a live socket. */
export type LiveState = 'connecting' | 'open' | 'closed';

export interface LiveSocketOptions {
  url: string;
  protocols: () => string[];
  onMessage: (data: unknown) => void;
  onState?: (state: LiveState, attempt: number) => void;
  /** Called when the socket closed without ever opening (maybe a refused key). */
  onFailure?: (attempt: number) => void;
  /** First retry delay; doubles per failed attempt up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Injected for tests. */
  create?: (url: string, protocols: string[]) => WebSocket;
  random?: () => number;
}

/** Backoff before reconnect attempt `attempt` (1-based): exponential with jitter. */
export function backoffDelay(attempt: number, base = 500, max = 30_000, random = Math.random): number {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/** A WebSocket that reconnects with exponential backoff until closed. */
export class LiveSocket {
  private ws: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private stopped = false;
  state: LiveState = 'closed';

  constructor(private readonly opts: LiveSocketOptions) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      ws.close(1000, 'bye');
    }
    this.setState('closed');
  }

  private setState(state: LiveState): void {
    this.state = state;
    this.opts.onState?.(state, this.attempt);
  }

  private connect(): void {
    if (this.stopped) return;
    this.setState('connecting');
    let opened = false;
    let ws: WebSocket;
    try {
      const create = this.opts.create ?? ((url, protocols) => new WebSocket(url, protocols));
      ws = create(this.opts.url, this.opts.protocols());
    } catch {
      this.scheduleRetry(false);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.setState('open');
    };
    ws.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== 'string') return;
      let data: unknown;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this.opts.onMessage(data);
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleRetry(opened);
    };
  }

  private scheduleRetry(wasOpen: boolean): void {
    if (this.stopped) return;
    this.attempt++;
    if (!wasOpen) this.opts.onFailure?.(this.attempt);
    this.setState('closed');
    const delay = backoffDelay(this.attempt, this.opts.baseDelayMs, this.opts.maxDelayMs, this.opts.random);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}

export function wsUrl(path: string): string {
  const loc = globalThis.location;
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${path}`;
}
