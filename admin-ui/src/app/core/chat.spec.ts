import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiService } from './api.service';
import { ChatError, ChatEvent, EMPTY_SAMPLING, chatEvents, chatRequest, parseSampling } from './chat';
import { SessionKey } from './session-key';
import { chunk, streamOf, usageChunk } from './testing';

async function all(gen: AsyncIterable<ChatEvent>): Promise<ChatEvent[]> {
  const out: ChatEvent[] = [];
  for await (const e of gen) out.push(e);
  return out;
}

describe('chatEvents', () => {
  it('turns chunks into deltas, the finish reason, the usage and the end', async () => {
    const body = streamOf([
      chunk({ role: 'assistant' }) + chunk({ content: 'Hel' }),
      chunk({ content: 'lo' }).slice(0, 30),
      chunk({ content: 'lo' }).slice(30) + chunk({}, 'length'),
      usageChunk(12, 2) + 'data: [DONE]\n\n',
    ]);
    expect(await all(chatEvents(body))).toEqual([
      { kind: 'delta', content: 'Hel' },
      { kind: 'delta', content: 'lo' },
      { kind: 'finish', reason: 'length' },
      { kind: 'usage', usage: { prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 } },
      { kind: 'done' },
    ]);
  });

  it('throws an error event with its message, after what came before it', async () => {
    const body = streamOf([chunk({ content: 'partial' }), 'data: {"error":{"message":"the model crashed","type":"server_error","param":null,"code":null}}\n\n']);
    const seen: ChatEvent[] = [];
    const err = await (async () => {
      try {
        for await (const e of chatEvents(body)) seen.push(e);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(seen).toEqual([{ kind: 'delta', content: 'partial' }]);
    expect(err).toBeInstanceOf(ChatError);
    expect((err as ChatError).message).toBe('the model crashed');
    expect((err as ChatError).error?.type).toBe('server_error');
  });

  it('says so when the stream ends without [DONE], and ignores a usage without counts', async () => {
    const body = streamOf([chunk({ content: 'x' }), 'data: {"choices":[],"usage":{"prompt_tokens":null}}\n\n']);
    const seen: ChatEvent[] = [];
    await expect(
      (async () => {
        for await (const e of chatEvents(body)) seen.push(e);
      })(),
    ).rejects.toThrow(/before data: \[DONE\]/);
    expect(seen).toEqual([{ kind: 'delta', content: 'x' }]);
  });
});

describe('ApiService.chat', () => {
  const realFetch = globalThis.fetch;
  afterEach(() => {
    globalThis.fetch = realFetch;
  });

  function setup(answer: () => Response) {
    const calls: { url: string; init: RequestInit }[] = [];
    globalThis.fetch = (async (url: RequestInfo | URL, init?: RequestInit) => {
      calls.push({ url: String(url), init: init! });
      return answer();
    }) as typeof fetch;
    TestBed.configureTestingModule({ providers: [provideRouter([])] });
    TestBed.inject(SessionKey).set('bkg_session');
    return { api: TestBed.inject(ApiService), calls };
  }

  it('posts the OpenAI body with the session key and streams the answer', async () => {
    const { api, calls } = setup(
      () => new Response(streamOf([chunk({ content: 'hi' }), 'data: [DONE]\n\n']), { headers: { 'content-type': 'text/event-stream' } }),
    );
    const req = chatRequest('llm', [{ role: 'user', content: 'hello' }], { temperature: 0, stop: ['\n'] });
    expect(await all(api.chat(req))).toEqual([{ kind: 'delta', content: 'hi' }, { kind: 'done' }]);
    expect(calls[0].url).toBe('/v1/chat/completions');
    expect((calls[0].init.headers as Record<string, string>)['authorization']).toBe('Bearer bkg_session');
    expect(JSON.parse(calls[0].init.body as string)).toEqual({
      model: 'llm',
      messages: [{ role: 'user', content: 'hello' }],
      temperature: 0,
      stop: ['\n'],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('throws the OpenAI error message of a refused call', async () => {
    const { api } = setup(
      () =>
        new Response(JSON.stringify({ error: { message: "max_tokens must be at least 1", type: 'invalid_request_error', param: 'max_tokens', code: null } }), {
          status: 400,
          headers: { 'content-type': 'application/json' },
        }),
    );
    await expect(all(api.chat(chatRequest('llm', [], { max_tokens: 0 })))).rejects.toMatchObject({
      name: 'ChatError',
      status: 400,
      message: 'max_tokens must be at least 1',
    });
  });
});

describe('parseSampling', () => {
  it('sends only the fields typed, as numbers, and stop sequences as typed', () => {
    expect(parseSampling(EMPTY_SAMPLING)).toEqual({ params: {} });
    expect(parseSampling({ temperature: '0.7', top_p: '0.9', max_tokens: '64', seed: '-3', stop: ' Human:\n\n###' })).toEqual({
      params: { temperature: 0.7, top_p: 0.9, max_tokens: 64, seed: -3, stop: [' Human:', '###'] },
    });
  });

  it('names the field that is out of range or not a number', () => {
    expect(parseSampling({ ...EMPTY_SAMPLING, temperature: '3' })).toEqual({ error: 'temperature must be between 0 and 2.' });
    expect(parseSampling({ ...EMPTY_SAMPLING, max_tokens: '1.5' })).toEqual({ error: 'max_tokens must be a whole number.' });
    expect(parseSampling({ ...EMPTY_SAMPLING, max_tokens: '0' })).toEqual({ error: 'max_tokens must be between 1 and 1000000.' });
    expect(parseSampling({ ...EMPTY_SAMPLING, stop: 'a\nb\nc\nd\ne' })).toEqual({ error: 'stop takes at most 4 sequences.' });
  });
});
