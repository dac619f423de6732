export { Gateway } from './gateway.js';
export { type CompiledGatewayOptions, compileGatewayOptions, type GatewayOptions } from './options.js';
