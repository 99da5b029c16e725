import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KubeConfig } from '@kubernetes/client-node';
import { FaultProxy, kubeConfigVia } from '../../envtest/fault-proxy.js';

/** An echo server that also remembers what it received and how its sockets ended. */
class Echo {
  readonly received: Buffer[] = [];
  readonly sockets: Socket[] = [];
  readonly ends: ('end' | 'error' | 'close')[] = [];
  server!: Server;
  port = 0;
  async start(): Promise<void> {
    this.server = createServer({ allowHalfOpen: true }, (s) => {
      this.sockets.push(s);
      s.on('data', (b: Buffer) => {
        this.received.push(b);
        if (!s.destroyed) s.write(b);
      });
      s.on('end', () => {
        this.ends.push('end');
        s.end();
      });
      s.on('error', () => this.ends.push('error'));
      s.on('close', () => this.ends.push('close'));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  get bytes(): string {
    return Buffer.concat(this.received).toString();
  }
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

/** A client connection with what it read and how it ended. */
interface Client {
  s: Socket;
  text: () => string;
  error: () => NodeJS.ErrnoException | undefined;
  closed: () => boolean;
  ended: () => boolean;
}

function client(port: number): Promise<Client> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let err: NodeJS.ErrnoException | undefined;
    let closed = false;
    let ended = false;
    s.on('data', (b: Buffer) => chunks.push(b));
    s.on('end', () => (ended = true));
    s.on('close', () => (closed = true));
    s.on('error', (e) => {
      err = e;
      reject(e);
    });
    s.on('connect', () =>
      resolve({
        s,
        text: () => Buffer.concat(chunks).toString(),
        error: () => err,
        closed: () => closed,
        ended: () => ended,
      }),
    );
  });
}

/** Connects and resolves with the code of the first socket error (reset before or after connect). */
function firstError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
    s.on('close', () => resolve(undefined));
  });
}

async function until(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const window = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('FaultProxy (a TCP byte relay with faults per direction)', () => {
  let echo: Echo;
  let proxy: FaultProxy;
  const clients: Client[] = [];
  const open = async () => {
    const c = await client(proxy.port);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    echo = new Echo();
    await echo.start();
    proxy = await FaultProxy.start({ target: { host: '127.0.0.1', port: echo.port } });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.s.destroy();
    await proxy.close();
    await echo.stop();
  });

  it('pass -> bytes reach the server and come back; bytes and connections are counted', async () => {
    const c = await open();
    c.s.write('hello');
    await until(() => c.text() === 'hello');
    expect(echo.bytes).toBe('hello');
    expect(proxy.stats).toMatchObject({
      accepted: 1,
      active: 1,
      refused: 0,
      resets: 0,
      'client-to-server': { forwarded: 5, dropped: 0 },
      'server-to-client': { forwarded: 5, dropped: 0 },
    });
    c.s.end(); // a FIN is relayed; the echo server ends too and the connection closes
    await until(() => c.ended() && c.closed());
    await until(() => proxy.stats.active === 0);
  });

  it('URL target -> host and port are taken from it', async () => {
    const p = await FaultProxy.start({ target: `https://127.0.0.1:${echo.port}` });
    try {
      const c = await client(p.port);
      c.s.write('x');
      await until(() => c.text() === 'x');
      c.s.destroy();
    } finally {
      await p.close();
    }
  });

  it.each(['client-to-server', 'server-to-client'] as const)(
    'delay %s -> the round trip takes at least the delay, in order',
    async (dir) => {
      proxy.delay(150, dir);
      const c = await open();
      const t0 = Date.now();
      for (const part of ['a', 'b', 'c', 'd']) c.s.write(part);
      await until(() => c.text() === 'abcd');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
      expect(proxy.stats[dir].forwarded).toBe(4);
    },
  );

  it('delay -> pass: bytes queued behind the delay are not overtaken', async () => {
    proxy.delay(150, 'client-to-server');
    const c = await open();
    c.s.write('1');
    await until(() => proxy.stats.active === 1);
    await window(20);
    proxy.pass('client-to-server');
    c.s.write('2');
    await until(() => echo.bytes.length === 2);
    expect(echo.bytes).toBe('12');
  });

  it('blackhole client-to-server -> the server gets nothing, the client no answer and no close', async () => {
    const c = await open();
    proxy.blackhole('client-to-server');
    c.s.write('lost');
    c.s.end(); // the FIN is swallowed too
    await until(() => proxy.stats['client-to-server'].dropped === 4);
    await window(300); // sampling window: nothing may arrive
    expect(echo.bytes).toBe('');
    expect(echo.ends).toEqual([]);
    expect(c.text()).toBe('');
    expect(c.closed()).toBe(false);
    expect(proxy.stats.active).toBe(1);
  });

  it('blackhole server-to-client -> the server gets the bytes, its answer is swallowed', async () => {
    const c = await open();
    proxy.blackhole('server-to-client');
    c.s.write('ping');
    await until(() => echo.bytes === 'ping');
    await until(() => proxy.stats['server-to-client'].dropped === 4);
    await window(300);
    expect(c.text()).toBe('');
    expect(c.closed()).toBe(false);
    expect(proxy.stats['client-to-server'].forwarded).toBe(4);
  });

  it('blackhole both -> a server-side close is not seen by the client (a partition)', async () => {
    const c = await open();
    c.s.write('x');
    await until(() => c.text() === 'x');
    proxy.blackhole('both');
    echo.sockets[0]!.destroy();
    await window(300);
    expect(c.closed()).toBe(false);
    expect(c.error()).toBeUndefined();
  });

  it('heal after a blackhole -> damaged connections are reset, new ones pass', async () => {
    const damaged = await open();
    const clean = await open();
    proxy.blackhole('both');
    damaged.s.write('lost');
    await until(() => proxy.stats['client-to-server'].dropped === 4);
    await proxy.heal();
    await until(() => damaged.closed());
    expect(damaged.error()?.code).toBe('ECONNRESET');
    clean.s.write('ok'); // no bytes lost on it: kept
    await until(() => clean.text() === 'ok');
    const fresh = await open();
    fresh.s.write('new');
    await until(() => fresh.text() === 'new');
    expect(proxy.stats.resets).toBe(1);
  });

  it('heal keepDamaged -> a damaged connection stays open and passes again', async () => {
    const c = await open();
    proxy.blackhole('client-to-server');
    c.s.write('lost');
    await until(() => proxy.stats['client-to-server'].dropped === 4);
    await proxy.heal({ keepDamaged: true });
    c.s.write('after');
    await until(() => c.text() === 'after');
    expect(echo.bytes).toBe('after');
  });

  it.each(['client-to-server', 'server-to-client'] as const)(
    'reset %s -> open connections get RST on both ends, new ones are reset at once; heal -> pass',
    async (dir) => {
      const c = await open();
      c.s.write('x');
      await until(() => c.text() === 'x');
      proxy.reset(dir);
      await until(() => c.closed());
      expect(c.error()?.code).toBe('ECONNRESET');
      await until(() => echo.ends.includes('close'));
      expect(echo.ends).toContain('error'); // the server saw a reset, not a FIN
      expect(await firstError(proxy.port)).toBe('ECONNRESET');
      expect(proxy.stats).toMatchObject({ accepted: 2, refused: 1, resets: 2, active: 0 });
      await proxy.heal();
      const fresh = await open();
      fresh.s.write('y');
      await until(() => fresh.text() === 'y');
    },
  );

  it('refuse new connections -> ECONNREFUSED, open connections keep working; accept again -> pass', async () => {
    const c = await open();
    await proxy.refuseNew(true);
    await expect(client(proxy.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    c.s.write('still');
    await until(() => c.text() === 'still');
    await proxy.refuseNew(false);
    const fresh = await open();
    fresh.s.write('z');
    await until(() => fresh.text() === 'z');
    expect(proxy.stats.accepted).toBe(2);
  });

  it('server unreachable -> the client connection is reset', async () => {
    await echo.stop();
    const c = await open();
    await until(() => c.closed());
    expect(c.error()?.code).toBe('ECONNRESET');
    expect(proxy.stats.active).toBe(0);
    echo = new Echo();
    await echo.start(); // for afterEach
  });
});

describe('kubeConfigVia', () => {
  const kc = (server: string) => {
    const k = new KubeConfig();
    k.loadFromOptions({
      clusters: [{ name: 'c', server, caData: 'Y2E=' }],
      users: [{ name: 'u', certData: 'Y2VydA==', keyData: 'a2V5' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    return k;
  };

  it('loopback server -> only the port changes; the CA and client cert stay', () => {
    const out = kubeConfigVia(kc('https://127.0.0.1:6443'), { port: 41000 });
    expect(out.getCurrentCluster()).toMatchObject({ server: 'https://127.0.0.1:41000', caData: 'Y2E=' });
    expect(out.getCurrentUser()).toMatchObject({ certData: 'Y2VydA==', keyData: 'a2V5' });
  });

  it('a server name the certificate may not cover -> refused', () => {
    expect(() => kubeConfigVia(kc('https://api.example:6443'), { port: 1 })).toThrow(/loopback/);
  });
});
