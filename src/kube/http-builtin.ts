/**
 * `node:http` without its lazy getters. An ESM `import … from 'node:http'` builds the
 * module namespace, which reads every export, and the `WebSocket` getter then loads
 * undici: about 13 MiB of resident memory in every agent for a client it never uses.
 * `process.getBuiltinModule` returns the CommonJS exports object as is.
 */
export const nodeHttp: typeof import('node:http') = process.getBuiltinModule('node:http');
