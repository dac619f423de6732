// A tools module, loaded by `fieldmesh node --tools-module examples/tools/image-analysis.mjs` or by
// `tools_modules = ["tools/image-analysis.mjs"]` in examples/node-gpu-host.toml. It exports `tools`:
// each declares its input and output schemas (checked at the gateway and on the node) and runs in a
// worker thread with `ctx` = { node_id, task_id, attempt, signal }. The node advertises tool:image_analysis.
//
// Arguments: { width, height, pixels: [r, g, b, r, g, b, ...] } (0-255 each).
// Output: the mean brightness (ITU-R BT.601 luma), the darkest and brightest pixel, and the node it ran on.

export const tools = [
  {
    name: 'image_analysis',
    description: 'Brightness statistics of an RGB image given as a flat array of 0-255 values',
    input_schema: {
      type: 'object',
      properties: {
        width: { type: 'integer', minimum: 1 },
        height: { type: 'integer', minimum: 1 },
        pixels: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 255 } },
      },
      required: ['width', 'height', 'pixels'],
      additionalProperties: false,
    },
    output_schema: {
      type: 'object',
      properties: {
        mean_luma: { type: 'number' },
        min_luma: { type: 'integer' },
        max_luma: { type: 'integer' },
        node_id: { type: 'string' },
      },
      required: ['mean_luma', 'min_luma', 'max_luma', 'node_id'],
    },
    run({ width, height, pixels }, ctx) {
      if (pixels.length !== width * height * 3) {
        throw new TypeError(`pixels must hold width × height × 3 = ${width * height * 3} values, not ${pixels.length}`);
      }
      let sum = 0;
      let min = 255;
      let max = 0;
      for (let i = 0; i < pixels.length; i += 3) {
        const y = Math.round(0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]);
        sum += y;
        min = Math.min(min, y);
        max = Math.max(max, y);
      }
      return { mean_luma: sum / (width * height), min_luma: min, max_luma: max, node_id: ctx.node_id };
    },
  },
];
