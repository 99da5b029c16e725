/**
 * A TCP fault proxy for integration tests: a byte relay between one client (an agent) and
 * the kube-apiserver, with faults per direction. TLS passes through untouched (the client
 * still verifies the API server's certificate: see {@link kubeConfigVia}).
 *
 * A lost node is modelled as a PARTITION (STYLE.md "Acting under failure"): the agent keeps
 * running with its device, only its API traffic stops. Per direction
 * (client-to-server, server-to-client) the proxy can:
 * - pass: bytes are forwarded as they come;
 * - delay: every chunk is held `ms` before it is forwarded (order is kept);
 * - drop: a blackhole: bytes (and FINs) are swallowed, connections stay open, nobody is told;
 * - reset: every connection is torn down with RST on both ends, and new connections are
 *   accepted and reset at once (TCP has no one-way reset: either direction resets all);
 * and independently it can refuse new connections (the listener closes: ECONNREFUSED).
 *
 * A connection that lost bytes to `drop` has a hole in its byte stream (TLS would fail on
 * it): {@link FaultProxy.heal} resets such connections, as a TCP connection that timed out
 * during the partition would be, unless told to keep them.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export type Direction = 'client-to-server' | 'server-to-client';
export type DirectionMode =
  { kind: 'pass' } | { kind: 'delay'; ms: number } | { kind: 'drop' } | { kind: 'reset' };

export interface DirectionCounters {
  /** Bytes written to the other side. */
  forwarded: number;
  /** Bytes swallowed by `drop`. */
  dropped: number;
}

export interface FaultProxyStats {
  /** Connections accepted from clients (including ones reset at once). */
  accepted: number;
  /** Connections reset at accept because a direction is in `reset` mode. */
  refused: number;
  /** Connections open now (client side). */
  active: number;
  /** Connections torn down with RST by the proxy (reset mode, heal of damaged ones). */
  resets: number;
  'client-to-server': DirectionCounters;
  'server-to-client': DirectionCounters;
}

export interface FaultProxyOptions {
  /** Where to forward: a URL (https://127.0.0.1:6443) or host and port. */
  target: string | { host: string; port: number };
  /** Port to listen on (127.0.0.1); default a free one. */
  port?: number;
}

const DIRECTIONS: readonly Direction[] = ['client-to-server', 'server-to-client'];

interface Queued {
  at: number;
  /** null: the sender's FIN. */
  chunk: Buffer | null;
}

interface Leg {
  queue: Queued[];
  timer: NodeJS.Timeout | undefined;
  ended: boolean;
}

interface Link {
  client: Socket;
  server: Socket;
  legs: Record<Direction, Leg>;
  /** Bytes were dropped: the byte stream has a hole. */
  damaged: boolean;
  done: boolean;
}

export class FaultProxy {
  readonly #target: { host: string; port: number };
  readonly #modes: Record<Direction, DirectionMode> = {
    'client-to-server': { kind: 'pass' },
    'server-to-client': { kind: 'pass' },
  };
  readonly #links = new Set<Link>();
  readonly #stats: FaultProxyStats = {
    accepted: 0,
    refused: 0,
    active: 0,
    resets: 0,
    'client-to-server': { forwarded: 0, dropped: 0 },
    'server-to-client': { forwarded: 0, dropped: 0 },
  };
  #server: Server | undefined;
  #port = 0;
  #closed = false;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  /** Starts listening on 127.0.0.1; resolves once it accepts connections. */
  static async start(o: FaultProxyOptions): Promise<FaultProxy> {
    const target =
      typeof o.target === 'string'
        ? (() => {
            const u = new URL(o.target);
            return {
              host: u.hostname.replace(/^\[|\]$/g, ''),
              port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)),
            };
          })()
        : o.target;
    const p = new FaultProxy(target);
    await p.#listen(o.port ?? 0);
    return p;
  }

  /** The port the proxy listens on (127.0.0.1). */
  get port(): number {
    return this.#port;
  }

  /** A copy of the counters. */
  get stats(): FaultProxyStats {
    return structuredClone(this.#stats);
  }

  /** The current mode of a direction. */
  mode(dir: Direction): DirectionMode {
    return this.#modes[dir];
  }

  /** Sets the mode of one direction or both. `reset` tears down every open connection now. */
  set(dir: Direction | 'both', mode: DirectionMode): void {
    for (const d of dir === 'both' ? DIRECTIONS : [dir]) this.#modes[d] = mode;
    if (mode.kind === 'reset') for (const l of [...this.#links]) this.#reset(l);
  }

  pass(dir: Direction | 'both' = 'both'): void {
    this.set(dir, { kind: 'pass' });
  }

  delay(ms: number, dir: Direction | 'both' = 'both'): void {
    this.set(dir, { kind: 'delay', ms });
  }

  /** A partition of this client: bytes in `dir` are swallowed, connections stay open. */
  blackhole(dir: Direction | 'both' = 'both'): void {
    this.set(dir, { kind: 'drop' });
  }

  /** RST on every open connection; new ones are reset at once until healed. */
  reset(dir: Direction | 'both' = 'both'): void {
    this.set(dir, { kind: 'reset' });
  }

  /**
   * Refuses new connections (the listener closes: clients get ECONNREFUSED) or accepts them
   * again on the same port. Open connections are not touched.
   */
  async refuseNew(refuse: boolean): Promise<void> {
    if (refuse && this.#server) {
      const s = this.#server;
      this.#server = undefined;
      s.close(); // stops accepting now; open connections are the links', not the server's concern
    } else if (!refuse && !this.#server && !this.#closed) {
      await this.#listen(this.#port);
    }
  }

  /**
   * Back to normal: both directions pass, new connections accepted. Connections that lost
   * bytes are reset (their streams have holes) unless `keepDamaged`.
   */
  async heal(opts: { keepDamaged?: boolean } = {}): Promise<void> {
    this.pass('both');
    if (!opts.keepDamaged) for (const l of [...this.#links]) if (l.damaged) this.#reset(l);
    await this.refuseNew(false);
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const l of [...this.#links]) this.#teardown(l, false);
    const s = this.#server;
    this.#server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  async #listen(port: number): Promise<void> {
    const server = createServer({ allowHalfOpen: true }, (client) => this.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  #accept(client: Socket): void {
    this.#stats.accepted += 1;
    client.on('error', () => {});
    if (DIRECTIONS.some((d) => this.#modes[d].kind === 'reset')) {
      this.#stats.refused += 1;
      this.#stats.resets += 1;
      rst(client);
      return;
    }
    const server = connect({ host: this.#target.host, port: this.#target.port, allowHalfOpen: true });
    server.on('error', () => {});
    const leg = (): Leg => ({ queue: [], timer: undefined, ended: false });
    const link: Link = {
      client,
      server,
      legs: { 'client-to-server': leg(), 'server-to-client': leg() },
      damaged: false,
      done: false,
    };
    this.#links.add(link);
    this.#stats.active += 1;
    client.setNoDelay(true);
    server.setNoDelay(true);
    client.on('data', (b: Buffer) => this.#onData(link, 'client-to-server', b));
    server.on('data', (b: Buffer) => this.#onData(link, 'server-to-client', b));
    client.on('end', () => this.#onData(link, 'client-to-server', null));
    server.on('end', () => this.#onData(link, 'server-to-client', null));
    // One side gone (error, RST, destroy): the other goes too, unless the news of it would
    // have to cross a blackholed direction (a partitioned peer learns nothing).
    client.on('close', (hadError) => this.#onClose(link, 'client-to-server', hadError));
    server.on('close', (hadError) => this.#onClose(link, 'server-to-client', hadError));
  }

  #onData(link: Link, dir: Direction, chunk: Buffer | null): void {
    if (link.done) return;
    const mode = this.#modes[dir];
    const leg = link.legs[dir];
    switch (mode.kind) {
      case 'reset':
        this.#reset(link);
        return;
      case 'drop':
        if (chunk) this.#stats[dir].dropped += chunk.length;
        link.damaged = true;
        return;
      case 'delay':
        leg.queue.push({ at: Math.max(Date.now() + mode.ms, leg.queue.at(-1)?.at ?? 0), chunk });
        this.#schedule(link, dir);
        return;
      case 'pass':
        if (leg.queue.length) {
          leg.queue.push({ at: leg.queue.at(-1)!.at, chunk });
          this.#schedule(link, dir);
        } else this.#deliver(link, dir, chunk);
    }
  }

  #schedule(link: Link, dir: Direction): void {
    const leg = link.legs[dir];
    if (leg.timer || !leg.queue.length) return;
    leg.timer = setTimeout(
      () => {
        leg.timer = undefined;
        const now = Date.now();
        while (leg.queue.length && leg.queue[0]!.at <= now) {
          const q = leg.queue.shift()!;
          // Bytes still in flight when the direction was blackholed are lost with it.
          if (this.#modes[dir].kind === 'drop') {
            if (q.chunk) this.#stats[dir].dropped += q.chunk.length;
            link.damaged = true;
          } else this.#deliver(link, dir, q.chunk);
          if (link.done) return;
        }
        this.#schedule(link, dir);
      },
      Math.max(0, leg.queue[0]!.at - Date.now()),
    );
  }

  #deliver(link: Link, dir: Direction, chunk: Buffer | null): void {
    const to = dir === 'client-to-server' ? link.server : link.client;
    const leg = link.legs[dir];
    if (to.destroyed || leg.ended) return;
    if (chunk === null) {
      leg.ended = true;
      to.end();
      return;
    }
    this.#stats[dir].forwarded += chunk.length;
    to.write(chunk);
  }

  #onClose(link: Link, from: Direction, hadError: boolean): void {
    if (link.done) return;
    const other = from === 'client-to-server' ? link.server : link.client;
    const mine = from === 'client-to-server' ? link.client : link.server;
    if (other.destroyed) {
      this.#finish(link);
      return;
    }
    if (this.#modes[from].kind === 'drop') return; // the peer does not learn of it
    // After a clean close (both FINs) the other side ends too; an error becomes a reset.
    if (hadError || !mine.readableEnded) rst(other);
    else other.end();
    if (other.destroyed) this.#finish(link);
    else other.once('close', () => this.#finish(link));
  }

  #reset(link: Link): void {
    this.#stats.resets += 1;
    this.#teardown(link, true);
  }

  #teardown(link: Link, withRst: boolean): void {
    for (const s of [link.client, link.server]) {
      if (withRst) rst(s);
      else s.destroy();
    }
    this.#finish(link);
  }

  #finish(link: Link): void {
    if (link.done) return;
    link.done = true;
    for (const leg of Object.values(link.legs)) {
      clearTimeout(leg.timer);
      leg.queue.length = 0;
    }
    if (this.#links.delete(link)) this.#stats.active -= 1;
  }
}

/** Closes a socket with RST (SO_LINGER 0), or destroys it if it has no handle any more. */
function rst(s: Socket): void {
  if (s.destroyed) return;
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

/**
 * A copy of `kc` whose clusters point at the proxy. Only the port changes: the host stays
 * 127.0.0.1 (or localhost), which the envtest serving certificate names (control-plane.ts
 * makeCerts: IP:127.0.0.1, DNS:localhost), so TLS verification still passes end to end.
 */
export function kubeConfigVia(kc: KubeConfig, proxy: { port: number }): KubeConfig {
  const doc = JSON.parse(kc.exportConfig()) as { clusters: { cluster: { server: string } }[] };
  for (const c of doc.clusters) {
    const u = new URL(c.cluster.server);
    if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost')
      throw new Error(`kubeConfigVia: ${u.hostname} is not a loopback name the certificate covers`);
    u.port = String(proxy.port);
    c.cluster.server = u.origin;
  }
  const out = new KubeConfig();
  out.loadFromString(JSON.stringify(doc));
  return out;
}
