// A deployable function: `fieldmesh deploy examples/functions/process-image.mjs --name process-image --env THRESHOLD=128`.
// The default export is the handler. It gets the call's arguments and a context with its own
// environment (`ctx.env`, the only variables it sees) and returns JSON.
//
// Arguments: { width, height, pixels: [r, g, b, r, g, b, ...] } (0-255 each).
// Output: the grayscale image, its histogram in 8 bins, and a black-and-white mask at THRESHOLD.

export default async function processImage(args, ctx) {
  const { width, height, pixels } = args ?? {};
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new TypeError('width and height must be positive integers');
  }
  if (!Array.isArray(pixels) || pixels.length !== width * height * 3) {
    throw new TypeError(`pixels must hold width × height × 3 = ${width * height * 3} values`);
  }
  const threshold = Number(ctx.env.THRESHOLD ?? 128);
  const gray = [];
  const histogram = new Array(8).fill(0);
  for (let i = 0; i < pixels.length; i += 3) {
    // ITU-R BT.601 luma.
    const y = Math.round(0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]);
    gray.push(y);
    histogram[Math.min(7, y >> 5)] += 1;
  }
  return {
    node_id: ctx.nodeId,
    width,
    height,
    gray,
    histogram,
    mask: gray.map((y) => (y >= threshold ? 1 : 0)),
    threshold,
  };
}
