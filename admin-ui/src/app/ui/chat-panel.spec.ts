import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { SessionKey } from '../core/session-key';
import { chunk, liveStream, usageChunk } from '../core/testing';
import { ChatPanel } from './chat-panel';

describe('ChatPanel', () => {
  const realFetch = globalThis.fetch;
  afterEach(() => {
    globalThis.fetch = realFetch;
  });

  /** Each call answers with the next of `answers`: a live stream the test writes to, or a Response. */
  async function render(answers: ('stream' | Response)[]) {
    const requests: { url: string; body: Record<string, unknown> }[] = [];
    const streams: ReturnType<typeof liveStream>[] = [];
    globalThis.fetch = (async (url: RequestInfo | URL, init?: RequestInit) => {
      requests.push({ url: String(url), body: JSON.parse(init!.body as string) });
      const next = answers.shift();
      if (next !== 'stream') return next!;
      const s = liveStream(init?.signal);
      streams.push(s);
      return new Response(s.body, { headers: { 'content-type': 'text/event-stream' } });
    }) as typeof fetch;
    TestBed.configureTestingModule({ imports: [ChatPanel], providers: [provideRouter([])] });
    TestBed.inject(SessionKey).set('bkg_session');
    const fixture = TestBed.createComponent(ChatPanel);
    fixture.componentRef.setInput('plugin', 'llm');
    fixture.componentRef.setInput('pluginName', 'Tiny Llama');
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    const settle = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
    };
    const type = (testid: string, value: string) => {
      const input = el.querySelector(`[data-testid=${testid}]`) as HTMLInputElement | HTMLTextAreaElement;
      input.value = value;
      input.dispatchEvent(new Event('input'));
    };
    const say = async (text: string) => {
      type('chat-input', text);
      await fixture.whenStable();
      (el.querySelector('[data-testid=chat-send]') as HTMLButtonElement).click();
      await settle();
    };
    const q = (testid: string) => el.querySelector(`[data-testid=${testid}]`);
    return { fixture, el, settle, type, say, q, requests, streams };
  }

  it('shows deltas as they stream, then the usage, finish reason and timings', async () => {
    const { el, settle, type, say, q, requests, streams } = await render(['stream']);
    type('chat-system', 'Be brief.');
    type('chat-temperature', '0');
    type('chat-max-tokens', '16');
    type('chat-stop-seqs', '\n\nEND');
    await say('Hello?');
    expect(requests[0].url).toBe('/v1/chat/completions');
    expect(requests[0].body).toEqual({
      model: 'llm',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello?' },
      ],
      temperature: 0,
      max_tokens: 16,
      stop: ['END'],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(q('chat-log')!.getAttribute('aria-busy')).toBe('true');
    expect((q('chat-send') as HTMLButtonElement).disabled).toBe(true);
    expect((q('chat-stop') as HTMLButtonElement).disabled).toBe(false);

    const s = streams[0];
    s.write(chunk({ role: 'assistant' }) + chunk({ content: 'Hi' }));
    await settle();
    expect(q('chat-answer')!.textContent).toContain('Hi');
    expect(q('chat-stats')).toBeNull(); // nothing until the answer ends
    // A chunk cut in the middle of its JSON, then the rest with the next delta.
    const there = chunk({ content: ' there' });
    s.write(there.slice(0, 25));
    await settle();
    expect(q('chat-answer')!.textContent).not.toContain('there');
    s.write(there.slice(25) + chunk({ content: '!' }));
    await settle();
    expect(q('chat-answer')!.textContent).toContain('Hi there!');

    s.write(chunk({}, 'stop') + usageChunk(9, 3) + 'data: [DONE]\n\n');
    s.close();
    await settle();
    expect(q('chat-turn')!.getAttribute('data-state')).toBe('done');
    expect(q('chat-usage')!.textContent).toBe('9 prompt + 3 completion tokens');
    expect(q('chat-finish')!.textContent).toBe('finish: stop');
    expect(q('chat-ttft')!.textContent).toMatch(/first token \d+ ms/);
    expect(q('chat-log')!.getAttribute('aria-busy')).toBe('false');
    expect(el.querySelector('[data-testid=chat-error]')).toBeNull();
  });

  it('never shows usage it did not receive', async () => {
    const { settle, say, q, streams } = await render(['stream']);
    await say('x');
    streams[0].write(chunk({ content: 'a' }) + chunk({}, 'length') + 'data: [DONE]\n\n');
    streams[0].close();
    await settle();
    expect(q('chat-usage')).toBeNull();
    expect(q('chat-tps')).toBeNull();
    expect(q('chat-stats')!.textContent).toMatch(/^usage not reported · finish: length · first token \d+ ms$/);
    expect(q('chat-finish')!.textContent).toBe('finish: length');
  });

  it('Stop aborts the request and keeps what arrived', async () => {
    const { settle, say, q, streams, requests, fixture } = await render(['stream', 'stream']);
    await say('Tell me a story');
    streams[0].write(chunk({ content: 'Once upon' }));
    await settle();
    (q('chat-stop') as HTMLButtonElement).click();
    await settle();
    expect(streams[0].aborted).toBe(true);
    expect(q('chat-turn')!.getAttribute('data-state')).toBe('stopped');
    expect(q('chat-answer')!.textContent).toContain('Once upon');
    expect(q('chat-stats')!.textContent).toMatch(/^stopped · first token \d+ ms$/);
    expect(q('chat-usage')).toBeNull();
    expect(q('chat-finish')).toBeNull();
    expect((q('chat-stop') as HTMLButtonElement).disabled).toBe(true);

    // The next message carries the conversation, the stopped answer included.
    await say('Go on');
    await fixture.whenStable();
    expect(requests[1].body['messages']).toEqual([
      { role: 'user', content: 'Tell me a story' },
      { role: 'assistant', content: 'Once upon' },
      { role: 'user', content: 'Go on' },
    ]);
  });

  it('shows the OpenAI error of a refused call, and of an error event mid-stream', async () => {
    const refused = new Response(JSON.stringify({ error: { message: "The model 'llm' is stopped", type: 'invalid_request_error', param: 'model', code: 'model_not_available' } }), {
      status: 503,
      headers: { 'content-type': 'application/json' },
    });
    const { el, settle, say, q, streams, requests } = await render([refused, 'stream']);
    await say('first');
    expect(q('chat-error')!.textContent).toBe("The model 'llm' is stopped");
    expect(q('chat-turn')!.getAttribute('data-state')).toBe('error');
    expect(q('chat-answer')).toBeNull(); // no empty bubble
    expect(q('chat-stats')!.textContent).toBe('not sent with the next message');

    await say('second');
    // The failed turn got no answer: it is not sent again.
    expect(requests[1].body['messages']).toEqual([{ role: 'user', content: 'second' }]);
    streams[0].write(chunk({ content: 'half' }) + 'data: {"error":{"message":"generation failed: out of memory","type":"server_error","param":null,"code":null}}\n\n');
    await settle();
    const turns = el.querySelectorAll('[data-testid=chat-turn]');
    expect(turns[1].getAttribute('data-state')).toBe('error');
    expect(turns[1].querySelector('[data-testid=chat-answer]')!.textContent).toContain('half');
    expect(turns[1].querySelector('[data-testid=chat-error]')!.textContent).toBe('generation failed: out of memory');
  });

  it('refuses parameters out of range before sending', async () => {
    const { el, type, say, q, requests } = await render([]);
    type('chat-top-p', '1.5');
    await say('x');
    expect(requests.length).toBe(0);
    expect(el.querySelector('[role=alert]')!.textContent).toBe('top_p must be between 0 and 1.');
    expect(q('chat-turn')).toBeNull();
    expect((q('chat-input') as HTMLTextAreaElement).value).toBe('x');
  });
});
