import { TestBed } from '@angular/core/testing';
import { provideRouter } from '@angular/router';
import { ApiError } from '../core/api-error';
import { ApiService } from '../core/api.service';
import { AuthStore } from '../core/auth.store';
import { PluginsStore } from '../core/plugins.store';
import { plugin } from '../core/testing';
import { PlaygroundPage } from './playground';

describe('PlaygroundPage', () => {
  let api: Record<string, ReturnType<typeof vi.fn>>;

  async function render() {
    api = {
      invoke: vi.fn(),
      plugins: vi.fn().mockResolvedValue([]),
      whoami: vi.fn().mockResolvedValue({ key_id: 'k', scopes: ['read', 'invoke'] }),
    };
    TestBed.configureTestingModule({
      imports: [PlaygroundPage],
      providers: [provideRouter([]), { provide: ApiService, useValue: api }],
    });
    api['plugins'].mockResolvedValue([
      plugin({
        id: 'candle',
        name: 'Candle',
        capabilities: [
          {
            id: 'model.infer',
            name: 'Infer',
            description: 'Sentence embeddings',
            input_schema: { type: 'object', required: ['input'], properties: { input: { type: 'array', items: { type: 'string' } } } },
            output_schema: true,
          },
        ],
      }),
    ]);
    await TestBed.inject(AuthStore).signIn('k');
    const fixture = TestBed.createComponent(PlaygroundPage);
    await fixture.whenStable();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    const send = async () => {
      (el.querySelector('[data-testid=pg-send]') as HTMLButtonElement).click();
      await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
    };
    return { fixture, el, send };
  }

  it('generates a labelled form from the input schema and sends a typed payload', async () => {
    const { el, fixture, send } = await render();
    const field = el.querySelector('#f-input') as HTMLInputElement;
    expect(field.getAttribute('aria-label')).toBe('input item 1');
    field.value = 'hello';
    field.dispatchEvent(new Event('input'));
    (Array.from(el.querySelectorAll('button')).find((b) => b.textContent?.includes('Add input item')) as HTMLButtonElement).click();
    await fixture.whenStable();
    const second = el.querySelector('[aria-label="input item 2"]') as HTMLInputElement;
    second.value = 'world';
    second.dispatchEvent(new Event('input'));
    api['invoke'].mockResolvedValue({ embeddings: [Array(384).fill(0.5), Array(384).fill(-0.25)], model: 'minilm' });
    await send();
    expect(api['invoke']).toHaveBeenCalledWith('candle', 'model.infer', { input: ['hello', 'world'] });
    const emb = el.querySelector('[data-testid=pg-embeddings]')!;
    expect(emb.textContent).toContain('2 embeddings of dimension 384');
    expect(el.querySelector('[data-testid=pg-response]')!.textContent).toContain('(dim 384)');
    expect(el.querySelector('[data-testid=pg-latency]')!.textContent).toMatch(/OK in [\d.]+ ms/);
  });

  it('refuses a missing required field before sending', async () => {
    const { el, send } = await render();
    await send();
    expect(api['invoke']).not.toHaveBeenCalled();
    expect(el.textContent).toContain('input is required');
  });

  it('shows a 400 problem with its schema errors', async () => {
    const { el, send } = await render();
    const field = el.querySelector('#f-input') as HTMLInputElement;
    field.value = 'x';
    field.dispatchEvent(new Event('input'));
    api['invoke'].mockRejectedValue(
      ApiError.fromBody(400, 'Bad Request', JSON.stringify({ title: 'Payload violates the input schema', status: 400, detail: 'bad', errors: [{ field: '/input/0', message: 'too short' }] })),
    );
    await send();
    expect(el.querySelector('[data-testid=problem]')!.textContent).toContain('/input/0');
    expect(el.textContent).toContain('Failed');
  });

  it('carries the payload from raw JSON back to the form, and keeps JSON it cannot show', async () => {
    const { el, fixture, send } = await render();
    const json = el.querySelector('[data-testid=mode-json]') as HTMLInputElement;
    json.click();
    await fixture.whenStable();
    const raw = el.querySelector('[data-testid=pg-json]') as HTMLTextAreaElement;
    raw.value = '{"input": ["a", "b"], "other": 1}';
    raw.dispatchEvent(new Event('input'));
    const form = el.querySelector('[data-testid=mode-form]') as HTMLInputElement;
    form.click();
    await fixture.whenStable();
    expect(el.textContent).toContain('no field for other');
    expect(el.querySelector('[data-testid=pg-json]')).not.toBeNull();
    raw.value = '{"input": ["a", "b"]}';
    raw.dispatchEvent(new Event('input'));
    form.click();
    await fixture.whenStable();
    expect((el.querySelector('[aria-label="input item 2"]') as HTMLInputElement).value).toBe('b');
    api['invoke'].mockResolvedValue({});
    await send();
    expect(api['invoke']).toHaveBeenCalledWith('candle', 'model.infer', { input: ['a', 'b'] });
  });

  it('a deep link to a chat capability opens the chat view; other capabilities offer it', async () => {
    api = {
      plugins: vi.fn().mockResolvedValue([
        plugin({
          id: 'llm',
          name: 'Tiny Llama',
          capabilities: [
            { id: 'completions', name: 'Completions', input_schema: { type: 'object' }, streaming: true },
            { id: 'chat', name: 'Chat', input_schema: { type: 'object' }, streaming: true },
          ],
        }),
      ]),
      whoami: vi.fn().mockResolvedValue({ key_id: 'k', scopes: ['read', 'invoke'] }),
    };
    TestBed.configureTestingModule({ imports: [PlaygroundPage], providers: [provideRouter([]), { provide: ApiService, useValue: api }] });
    await TestBed.inject(AuthStore).signIn('k');
    const fixture = TestBed.createComponent(PlaygroundPage);
    fixture.componentRef.setInput('plugin', 'llm');
    fixture.componentRef.setInput('capability', 'chat');
    await fixture.whenStable();
    await new Promise((r) => setTimeout(r, 0));
    await fixture.whenStable();
    const el = fixture.nativeElement as HTMLElement;
    expect((el.querySelector('[data-testid=pg-capability]') as HTMLSelectElement).value).toBe('chat');
    expect(el.querySelector('app-chat-panel h2')!.textContent).toContain('Chat with Tiny Llama');
    expect(el.querySelector('[data-testid=pg-send]')).toBeNull();

    fixture.componentRef.setInput('capability', 'completions');
    await fixture.whenStable();
    expect(el.querySelector('app-chat-panel')).toBeNull();
    (el.querySelector('[data-testid=pg-open-chat]') as HTMLButtonElement).click();
    await fixture.whenStable();
    expect(el.querySelector('app-chat-panel')).not.toBeNull();
  });

  it('keeps what the user typed when a live status push replaces the plugin', async () => {
    const { el, fixture, send } = await render();
    (el.querySelector('[data-testid=mode-json]') as HTMLInputElement).click();
    await fixture.whenStable();
    const raw = el.querySelector('[data-testid=pg-json]') as HTMLTextAreaElement;
    raw.value = '{"input": ["typed by the user"]}';
    raw.dispatchEvent(new Event('input'));
    // What a `status` push does: a new object for the same plugin, its instances changed.
    const store = TestBed.inject(PluginsStore);
    const now = store.plugins()['candle'];
    store.upsert({ ...now, status: 'running', capabilities: now.capabilities.map((c) => ({ ...c })) });
    await fixture.whenStable();
    expect((el.querySelector('[data-testid=pg-json]') as HTMLTextAreaElement).value).toBe('{"input": ["typed by the user"]}');
    api['invoke'].mockResolvedValue({});
    await send();
    expect(api['invoke']).toHaveBeenCalledWith('candle', 'model.infer', { input: ['typed by the user'] });
  });

  describe('a capability that takes an image', () => {
    async function renderFaces() {
      api = {
        invoke: vi.fn(),
        invokeFile: vi.fn(),
        plugins: vi.fn().mockResolvedValue([
          plugin({
            id: 'rustyface',
            name: 'RustyFace',
            capabilities: [
              {
                id: 'face.detect',
                name: 'Detect faces',
                input_schema: {
                  type: 'object',
                  required: ['image'],
                  properties: {
                    image: { type: 'string', contentEncoding: 'base64', contentMediaType: 'image/*' },
                    min_face_size: { type: 'integer', minimum: 20 },
                    annotate: { type: 'boolean' },
                  },
                },
                output_schema: true,
              },
            ],
          }),
        ]),
        whoami: vi.fn().mockResolvedValue({ key_id: 'k', scopes: ['read', 'invoke'] }),
      };
      TestBed.configureTestingModule({ imports: [PlaygroundPage], providers: [provideRouter([]), { provide: ApiService, useValue: api }] });
      await TestBed.inject(AuthStore).signIn('k');
      const fixture = TestBed.createComponent(PlaygroundPage);
      await fixture.whenStable();
      await new Promise((r) => setTimeout(r, 0));
      await fixture.whenStable();
      const el = fixture.nativeElement as HTMLElement;
      const send = async () => {
        (el.querySelector('[data-testid=pg-send]') as HTMLButtonElement).click();
        await new Promise((r) => setTimeout(r, 0));
        await fixture.whenStable();
      };
      /** Drops `file` on the drop zone, as a browser's drop event carries it. */
      const drop = async (file: File) => {
        const event = new Event('drop', { bubbles: true, cancelable: true }) as Event & { dataTransfer: unknown };
        Object.defineProperty(event, 'dataTransfer', { value: { files: [file] } });
        el.querySelector('[data-testid=image-drop]')!.dispatchEvent(event);
        await fixture.whenStable();
      };
      return { fixture, el, send, drop };
    }

    beforeEach(() => {
      // jsdom has no object URLs.
      let n = 0;
      URL.createObjectURL = vi.fn(() => `blob:test/${++n}`);
      URL.revokeObjectURL = vi.fn();
    });

    it('offers a file picker instead of a text field, and asks for an image before sending', async () => {
      const { el, send } = await renderFaces();
      const picker = el.querySelector('#f-image') as HTMLInputElement;
      expect(picker.type).toBe('file');
      expect(picker.accept).toBe('image/*');
      expect((picker.labels ?? [])[0]?.textContent).toContain('image');
      await send();
      expect(api['invokeFile']).not.toHaveBeenCalled();
      expect(el.textContent).toContain('Choose an image for image');
    });

    it('sends a dropped image as a file with the typed options, and draws the returned boxes over it', async () => {
      const { el, fixture, send, drop } = await renderFaces();
      await drop(new File(['not an image'], 'notes.txt', { type: 'text/plain' }));
      expect(el.querySelector('[data-testid=image-drop] [role=alert]')!.textContent).toContain('takes image/*');
      const png = new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47])], 'faces.png', { type: 'image/png' });
      await drop(png);
      expect((el.querySelector('[data-testid=image-preview]') as HTMLImageElement).src).toBe('blob:test/1');
      const min = el.querySelector('#f-min_face_size') as HTMLInputElement;
      min.value = '40';
      min.dispatchEvent(new Event('input'));
      (el.querySelector('#f-annotate') as HTMLInputElement).click();
      await fixture.whenStable();
      api['invokeFile'].mockResolvedValue({
        faces: [
          { x: 100, y: 50, width: 200, height: 100, score: 12.345 },
          { x: 500, y: 300, width: 100, height: 100, score: 3 },
        ],
        width: 1000,
        height: 500,
      });
      await send();
      expect(api['invokeFile']).toHaveBeenCalledWith('rustyface', 'face.detect', png, 'faces.png', [
        ['min_face_size', '40'],
        ['annotate', 'true'],
      ]);
      expect(api['invoke']).not.toHaveBeenCalled();
      expect((el.querySelector('[data-testid=face-image]') as HTMLImageElement).src).toBe('blob:test/1');
      const boxes = [...el.querySelectorAll<HTMLElement>('[data-testid=face-box]')];
      expect(boxes.map((b) => [b.style.left, b.style.top, b.style.width, b.style.height])).toEqual([
        ['10%', '10%', '20%', '20%'],
        ['50%', '60%', '10%', '20%'],
      ]);
      expect(el.querySelector('[data-testid=face-count]')!.textContent).toContain('2 faces in 1000×500');
      const rows = [...el.querySelectorAll('[data-testid=face-list] tbody tr')].map((r) => r.textContent);
      expect(rows[0]).toContain('12.35');
      expect(rows).toHaveLength(2);
    });

    it('the file picker works like a drop; raw JSON still sends base64 and shows it with the boxes', async () => {
      const { el, fixture, send } = await renderFaces();
      const picker = el.querySelector('#f-image') as HTMLInputElement;
      const jpeg = new File([new Uint8Array([0xff, 0xd8])], 'a.jpg', { type: 'image/jpeg' });
      Object.defineProperty(picker, 'files', { value: [jpeg] });
      picker.dispatchEvent(new Event('change'));
      await fixture.whenStable();
      expect(el.querySelector('[data-testid=image-name]')!.textContent).toBe('a.jpg');

      (el.querySelector('[data-testid=mode-json]') as HTMLInputElement).click();
      await fixture.whenStable();
      const raw = el.querySelector('[data-testid=pg-json]') as HTMLTextAreaElement;
      raw.value = '{"image": "/9g="}';
      raw.dispatchEvent(new Event('input'));
      api['invoke'].mockResolvedValue({ faces: [], width: 2, height: 2 });
      await send();
      expect(api['invoke']).toHaveBeenCalledWith('rustyface', 'face.detect', { image: '/9g=' });
      expect((el.querySelector('[data-testid=face-image]') as HTMLImageElement).getAttribute('src')).toBe('data:image/*;base64,/9g=');
      expect(el.querySelector('[data-testid=face-count]')!.textContent).toContain('0 faces');
      expect(el.querySelectorAll('[data-testid=face-box]')).toHaveLength(0);
    });
  });
});
