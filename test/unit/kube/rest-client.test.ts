import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RestClient, type WatchEvent } from '../../../src/kube/rest-client.js';

describe('RestClient against a local HTTP server', () => {
  let seen: IncomingHttpHeaders | undefined;
  const server = createServer((req, res) => {
    seen = req.headers;
    const gz = req.headers['accept-encoding']?.includes('gzip');
    if (req.url?.includes('watch=true')) {
      const lines = ['a', 'b'].map((n) =>
        JSON.stringify({ type: 'ADDED', object: { metadata: { name: n } } }),
      );
      res.writeHead(200, {
        'Content-Type': 'application/json',
        ...(gz ? { 'Content-Encoding': 'gzip' } : {}),
      });
      const body = `${lines.join('\n')}\n`;
      res.end(gz ? gzipSync(body) : body);
      return;
    }
    const body = JSON.stringify({
      items: Array.from({ length: 1000 }, (_, i) => ({ metadata: { name: `o${i}` } })),
    });
    res.writeHead(200, { 'Content-Type': 'application/json', ...(gz ? { 'Content-Encoding': 'gzip' } : {}) });
    res.end(gz ? gzipSync(body) : body);
  });
  let rest: RestClient;
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    rest = new RestClient({ server: `http://127.0.0.1:${port}` }, { userAgent: 'prfence-agent/node-x' });
  });
  afterAll(async () => {
    rest.close();
    await new Promise((r) => server.close(r));
  });

  it('asks for gzip and sends a User-Agent naming the caller; a gzipped list -> decoded', async () => {
    const list = await rest.get<{ items: { metadata: { name: string } }[] }>('/api/v1/things');
    expect(list.items).toHaveLength(1000);
    expect(seen?.['accept-encoding']).toContain('gzip');
    expect(seen?.['user-agent']).toMatch(/^prfence-agent\/node-x \(\w+\/\w+\) node\/v\d+/);
  });

  it('a gzipped watch stream -> events decoded line by line', async () => {
    const events: WatchEvent<{ metadata: { name: string } }>[] = [];
    await rest.watch('/api/v1/things', {}, (e) =>
      events.push(e as WatchEvent<{ metadata: { name: string } }>),
    );
    expect(events.map((e) => e.object.metadata.name)).toEqual(['a', 'b']);
  });
});
