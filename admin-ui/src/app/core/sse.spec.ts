import { SseParser, readSse } from './sse';
import { streamOf } from './testing';

async function all(body: ReadableStream<Uint8Array>) {
  const out = [];
  for await (const e of readSse(body)) out.push(e);
  return out;
}

describe('SseParser', () => {
  it('keeps a line split across chunks until its end arrives', () => {
    const p = new SseParser();
    expect(p.push('data: {"a"')).toEqual([]);
    expect(p.push(':1}')).toEqual([]);
    expect(p.push('\n')).toEqual([]);
    expect(p.push('\n')).toEqual([{ event: 'message', data: '{"a":1}' }]);
  });

  it('dispatches several events from one chunk, in order', () => {
    const p = new SseParser();
    expect(p.push('data: one\n\ndata: two\n\ndata: thr')).toEqual([
      { event: 'message', data: 'one' },
      { event: 'message', data: 'two' },
    ]);
    expect(p.push('ee\n\n')).toEqual([{ event: 'message', data: 'three' }]);
  });

  it('joins data lines, skips comments, reads event names and ids, and takes CRLF, CR and LF', () => {
    const p = new SseParser();
    const events = p.push(': keep-alive\r\nevent: update\r\nid: 7\r\ndata: a\rdata:b\ndata\n\n');
    expect(events).toEqual([{ event: 'update', id: '7', data: 'a\nb\n' }]);
  });

  it('does not count a CRLF split between chunks as two line ends', () => {
    const p = new SseParser();
    expect(p.push('data: x\r')).toEqual([]);
    // Were the "\n" a second line end, the event would be dispatched here.
    expect(p.push('\ndata: y\r\n')).toEqual([]);
    expect(p.push('\r\n')).toEqual([{ event: 'message', data: 'x\ny' }]);
  });

  it('drops an event the stream never finished, and blank lines without data', () => {
    const p = new SseParser();
    expect(p.push('\n\nevent: x\n\n')).toEqual([]);
    p.push('data: cut off');
    expect(p.end()).toEqual([]);
    expect(p.push('data: next\n\n')).toEqual([{ event: 'message', data: 'next' }]);
  });
});

describe('readSse', () => {
  it('decodes UTF-8 characters split between reads', async () => {
    const bytes = new TextEncoder().encode('data: café ☕\n\n');
    const cut = bytes.indexOf(0xe2) + 1; // inside the three bytes of ☕
    const events = await all(streamOf([bytes.slice(0, 8), bytes.slice(8, cut), bytes.slice(cut)]));
    expect(events).toEqual([{ event: 'message', data: 'café ☕' }]);
  });

  it('yields each event as soon as its chunk arrives', async () => {
    const events = await all(streamOf(['data: [1]\n\nda', 'ta: [2]\n', '\ndata: [DONE]\n\n']));
    expect(events.map((e) => e.data)).toEqual(['[1]', '[2]', '[DONE]']);
  });
});
