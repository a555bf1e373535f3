import { accepts, detections, formOptions, imageInput, place } from './media';

describe('media', () => {
  const detect = {
    type: 'object',
    properties: {
      image: { type: 'string', contentEncoding: 'base64', contentMediaType: 'image/*' },
      min_face_size: { type: 'integer' },
    },
  };

  it('finds the property that takes an image from its content keywords', () => {
    expect(imageInput(detect)).toEqual({ name: 'image', accept: 'image/*' });
    expect(imageInput({ properties: { doc: { type: 'string', contentEncoding: 'base64', contentMediaType: 'application/pdf' } } })).toBeNull();
    expect(imageInput({ properties: { image: { type: 'string', contentMediaType: 'image/png' } } })).toBeNull();
    expect(imageInput({ properties: { any: { type: 'string', contentEncoding: 'base64', contentMediaType: '*/*' } } })).toEqual({ name: 'any', accept: 'image/*' });
    expect(imageInput(true)).toBeNull();
  });

  it('accepts the file types the capability declares', () => {
    expect(accepts('image/*', 'image/png')).toBe(true);
    expect(accepts('image/png', 'image/png')).toBe(true);
    expect(accepts('image/png', 'image/jpeg')).toBe(false);
    expect(accepts('image/*', 'text/plain')).toBe(false);
    expect(accepts('image/*', '')).toBe(false);
  });

  it('reads a face detector answer and nothing else', () => {
    const answer = { faces: [{ x: 10, y: 20, width: 30, height: 40, score: 5.5 }], width: 200, height: 100 };
    expect(detections(answer)).toEqual(answer);
    expect(detections({ faces: [], width: 10, height: 10 })).toEqual({ faces: [], width: 10, height: 10 });
    expect(detections({ faces: [{ x: 1 }], width: 10, height: 10 })).toBeNull();
    expect(detections({ embeddings: [[1]] })).toBeNull();
    expect(detections({ faces: [], width: 0, height: 10 })).toBeNull();
  });

  it('places boxes in percent of the image, clipped to it', () => {
    expect(place({ x: 10, y: 20, width: 30, height: 40, score: 1 }, 200, 100)).toEqual({ left: 5, top: 20, width: 15, height: 40 });
    expect(place({ x: -10, y: 90, width: 30, height: 40, score: 1 }, 200, 100)).toEqual({ left: 0, top: 90, width: 10, height: 10 });
  });

  it('sends the options as form text, leaving out the image and empty values', () => {
    expect(formOptions({ image: 'x', min_face_size: 40, annotate: true, label: '', tags: ['a'] }, 'image')).toEqual([
      ['min_face_size', '40'],
      ['annotate', 'true'],
      ['tags', '["a"]'],
    ]);
  });
});
