import { compactJson, findEmbeddings } from './embeddings';

const vec = (n: number) => Array.from({ length: n }, (_, i) => i / n);

describe('embeddings', () => {
  it('finds Candle-style embeddings', () => {
    const view = findEmbeddings({ embeddings: [vec(384), vec(384)], model: 'all-MiniLM-L6-v2' })!;
    expect(view.source).toBe('embeddings');
    expect(view.model).toBe('all-MiniLM-L6-v2');
    expect(view.vectors.length).toBe(2);
    expect(view.vectors[0].dim).toBe(384);
    expect(view.vectors[0].head).toHaveLength(4);
    expect(view.vectors[0].tail).toHaveLength(4);
  });

  it('finds OpenAI-style data[].embedding', () => {
    const view = findEmbeddings({ object: 'list', data: [{ index: 3, embedding: vec(8) }] })!;
    expect(view.source).toBe('data[].embedding');
    expect(view.vectors[0]).toMatchObject({ index: 3, dim: 8 });
  });

  it('ignores answers without vectors', () => {
    expect(findEmbeddings({ hello: 'world' })).toBeNull();
    expect(findEmbeddings(null)).toBeNull();
    expect(findEmbeddings({ embeddings: [['a']] })).toBeNull();
  });

  it('shortens long number arrays in the JSON view', () => {
    const text = compactJson({ embeddings: [vec(384)] });
    expect(text).toContain('(dim 384)');
    expect(text).toContain('376 more');
    expect(text.length).toBeLessThan(300);
    expect(compactJson({ a: [1, 2, 3] })).toContain('1,');
  });
});
