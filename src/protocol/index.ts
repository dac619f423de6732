export * from './api.js';
export * from './codec.js';
export * from './frames.js';
export * from './json.js';
export * from './signing.js';
export * from './target.js';
