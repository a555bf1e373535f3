// Server-sent events (text/event-stream) as the WHATWG HTML standard parses them, for answers read
// with fetch() (EventSource can neither POST nor send an Authorization header).
//
//   bytes ──TextDecoder(stream)──> text ──SseParser.push──> complete lines ──> events at blank lines
//
// A network chunk may end in the middle of a line (or of a UTF-8 character, which the streaming
// TextDecoder keeps for the next chunk), and may hold several events: the parser keeps the unfinished
// line and dispatches an event only at the blank line that ends it.

/** One dispatched event: `data` joins the event's data lines with "\n". */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export class SseParser {
  private buffer = '';
  /** The last chunk ended in "\r": a "\n" starting the next one belongs to that line break. */
  private pendingCr = false;
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  private hasData = false;

  /** Feeds decoded text; returns the events it completed (often none, sometimes several). */
  push(text: string): SseEvent[] {
    if (this.pendingCr && text.startsWith('\n')) text = text.slice(1);
    this.pendingCr = false;
    this.buffer += text;
    const out: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      const line = this.buffer.slice(start, i);
      if (c === '\r') {
        if (i + 1 === this.buffer.length) this.pendingCr = true;
        else if (this.buffer[i + 1] === '\n') i++;
      }
      start = i + 1;
      const event = this.line(line);
      if (event) out.push(event);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /**
   * The stream ended. Per the standard, an event not ended by a blank line is dropped; an unfinished
   * last line is too. Returns nothing, and resets the parser.
   */
  end(): SseEvent[] {
    this.buffer = '';
    this.pendingCr = false;
    this.reset();
    return [];
  }

  private line(line: string): SseEvent | null {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return null; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      // `retry` and unknown fields are ignored: there is no reconnection here.
    }
    return null;
  }

  private dispatch(): SseEvent | null {
    if (!this.hasData) {
      this.event = '';
      return null;
    }
    const event: SseEvent = { event: this.event || 'message', data: this.data.join('\n') };
    if (this.id !== undefined) event.id = this.id;
    this.reset();
    return event;
  }

  private reset(): void {
    this.data = [];
    this.event = '';
    this.hasData = false;
  }
}

/** The events of a response body, in order, as they arrive. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    parser.end();
  } finally {
    // Stops the download when the consumer leaves early (Stop, an error event, [DONE]).
    reader.cancel().catch(() => undefined);
  }
}
