/**
 * The native executor: where every blocking libc call of the device layer runs.
 *
 * Guarantees (STYLE "Native calls"; defects 13/14):
 * - Calls run on the executor's own threads (a `NativeBackend`: worker threads doing
 *   synchronous koffi calls in production, an in-process fake in tests), never on the
 *   event loop and never on libuv's shared pool (fs, DNS).
 * - Threads: up to `poolSize` working threads; a thread whose call is past its time limit
 *   is STUCK: taken out of the pool (a replacement may start) and, when its call finally
 *   returns, kept if the pool is short, else terminated. Never more than `maxThreads`
 *   threads, stuck ones included.
 * - Per device (a `NativeHandle`, one per fd): ONE call in flight, the rest queued here.
 *   The time limit is fixed at submission, so queueing counts: a call still queued at its
 *   deadline is NotSentError (never sent); a call running at its deadline is
 *   IndeterminateError and marks the device HUNG: queued and new calls fail fast with
 *   NotSentError until the stuck call returns (its late answer is dropped).
 * - close() is queued behind the device's calls: queued calls are rejected NotSent, the
 *   running one finishes first, and only then is the fd closed, so no call can ever run
 *   on a closed (possibly reused) fd number. The caller of close() waits for a running
 *   call only until that call's time limit: behind a call past it, close() resolves at
 *   once and the fd is closed when the call returns.
 */
import { Worker } from 'node:worker_threads';
import { IndeterminateError, NotSentError } from '../errors.js';
import { classifyErrno } from './classify.js';
import { runNativeCall, type CallLibc, type NativeReply, type NativeRequest } from './native-call.js';

/** One thread that runs native calls, one at a time. */
export interface NativeThread {
  /** Settles when the thread can take calls (a worker has loaded koffi), or failed to start. */
  readonly ready: Promise<void>;
  /** Runs one call; settles whenever the call returns (there is no time limit here). */
  run(req: NativeRequest): Promise<NativeReply>;
  /** Whether this thread alone keeps the process alive (true only while a caller waits on it). */
  ref(on: boolean): void;
  /** Ends the thread; called only when it is idle. */
  terminate(): void;
}

/** A thread's `run` rejects with this when the thread was gone before the call was handed over (never sent). */
export class NativeThreadGoneError extends Error {}

/** Makes threads: the seam between the executor's scheduling and the real libc. */
export interface NativeBackend {
  spawn(): NativeThread;
}

export interface NativeExecutorOptions {
  /** Default: worker threads running koffi (`workerThreadBackend()`). */
  backend?: NativeBackend;
  /** Threads that run calls at the same time (stuck threads not counted). Default 4. */
  poolSize?: number;
  /** Hard limit on threads, stuck ones included. Default 32. */
  maxThreads?: number;
}

/** A point-in-time view, for metrics and readiness. */
export interface NativeExecutorStats {
  /** Threads alive, stuck ones included. */
  readonly threads: number;
  /** Threads running a call within its time limit. */
  readonly busy: number;
  /** Threads running a call past its time limit. */
  readonly stuck: number;
  /** Calls waiting: in device queues or for a thread. */
  readonly queued: number;
  /** Open devices (handles not yet closed). */
  readonly devices: number;
  /** Devices with a call past its time limit. */
  readonly hungDevices: number;
  /** Threads still starting (a worker loading Node and koffi). */
  readonly starting: number;
  /** Every thread allowed is stuck: no new call can run until one returns. */
  readonly exhausted: boolean;
}

export interface CallOptions {
  /** Operation name for errors, e.g. "register". */
  readonly op: string;
  /** Time limit from submission, queueing included (ms). */
  readonly timeoutMs: number;
  /** Stops waiting: NotSent while queued, Indeterminate once running (the call itself goes on). */
  readonly signal?: AbortSignal | undefined;
}

/** A call on one fd: every request kind except open and close, without the fd. */
export type DeviceRequest =
  | Omit<Extract<NativeRequest, { kind: 'ioctl' }>, 'fd'>
  | Omit<Extract<NativeRequest, { kind: 'read' }>, 'fd'>
  | Omit<Extract<NativeRequest, { kind: 'write' }>, 'fd'>;

interface Job {
  readonly req: NativeRequest;
  readonly op: string;
  readonly lane: Lane | null;
  state: 'queued' | 'waiting' | 'running' | 'done';
  /** The caller has its answer (or error); a later reply goes to `late`. */
  settled: boolean;
  resolve(r: NativeReply): void;
  reject(e: Error): void;
  late?: (r: NativeReply) => void;
  thread?: PoolThread;
  cleanup(): void;
}

interface PoolThread {
  readonly t: NativeThread;
  /** Still booting: counted in the pool, given no call yet. */
  starting: boolean;
  stuck: boolean;
}

/** How long a new thread may take to start before calls waiting for it fail (NotSent). */
const START_LIMIT_MS = 120_000;

/** The per-fd queue. */
class Lane {
  readonly queue: Job[] = [];
  current: Job | null = null;
  hung = false;
  closing: Promise<void> | null = null;
  startClose: (() => void) | null = null;
  /** Ends the wait of a close() caller (the fd is still closed after the running call). */
  stopWaiting: (() => void) | null = null;
  constructor(
    readonly fd: number,
    readonly device: string,
  ) {}
}

export class NativeExecutor {
  readonly #backend: NativeBackend;
  readonly #poolSize: number;
  readonly #maxThreads: number;
  readonly #idle: PoolThread[] = [];
  readonly #all = new Set<PoolThread>();
  readonly #waiting: Job[] = [];
  readonly #lanes = new Set<Lane>();

  constructor(opts: NativeExecutorOptions = {}) {
    this.#backend = opts.backend ?? workerThreadBackend();
    this.#poolSize = opts.poolSize ?? 4;
    this.#maxThreads = Math.max(opts.maxThreads ?? 32, this.#poolSize);
  }

  stats(): NativeExecutorStats {
    let stuck = 0;
    let starting = 0;
    for (const t of this.#all) {
      if (t.stuck) stuck++;
      if (t.starting) starting++;
    }
    let queued = this.#waiting.length;
    let hung = 0;
    for (const l of this.#lanes) {
      queued += l.queue.length;
      if (l.hung) hung++;
    }
    return {
      threads: this.#all.size,
      busy: this.#all.size - this.#idle.length - stuck - starting,
      stuck,
      queued,
      devices: this.#lanes.size,
      hungDevices: hung,
      starting,
      exhausted: stuck >= this.#maxThreads,
    };
  }

  /**
   * open(2) on an executor thread, within `timeoutMs`. Resolves a handle for the fd.
   * Throws the classified errno, or NotSentError at the time limit (an fd that arrives
   * later is closed).
   */
  async open(
    path: string,
    flags: number,
    opts: { device?: string; timeoutMs: number; signal?: AbortSignal },
  ): Promise<NativeHandle> {
    const device = opts.device ?? path;
    // Starting the first thread (a worker loads Node and koffi: slow on an emulated or
    // loaded machine) is not the device's time: the open's limit starts once one is up.
    try {
      await this.warm();
    } catch (e) {
      throw new NotSentError(`open: no native thread: ${String(e)}`, { op: 'open', device, cause: e });
    }
    const reply = await this.#submit(null, { kind: 'open', path, flags }, { op: 'open', ...opts }, (late) => {
      if (late.ret >= 0) this.#closeLater(late.ret);
    });
    if (reply.ret < 0) throw classifyErrno(reply.errno, { op: 'open', device });
    const lane = new Lane(reply.ret, device);
    this.#lanes.add(lane);
    return new NativeHandle(this, lane);
  }

  /**
   * Starts threads until `count` (at most the pool size) are up or starting, and resolves
   * once `count` can take calls (stuck threads do not count). Callers may start them
   * early to overlap the start-up with other work. Rejects if a thread fails to start.
   */
  async warm(count = 1): Promise<void> {
    const want = Math.min(count, this.#poolSize);
    const live = () => [...this.#all].filter((t) => !t.stuck);
    while (live().filter((t) => !t.starting).length < want) {
      const starting = live().filter((t) => t.starting);
      const fresh =
        starting.length + live().filter((t) => !t.starting).length < want ? this.#spawn() : undefined;
      const next = fresh ?? starting[0];
      if (!next) return; // at the thread limit: calls queue as usual
      await next.t.ready;
    }
  }

  /** Terminates idle threads (tests, shutdown). Busy and stuck threads end when their call returns. */
  shutdown(): void {
    for (const t of this.#idle.splice(0)) {
      this.#all.delete(t);
      t.t.terminate();
    }
  }

  /** @internal NativeHandle.call */
  callOn(lane: Lane, req: NativeRequest, opts: CallOptions): Promise<NativeReply> {
    if (lane.closing) {
      return Promise.reject(
        new NotSentError(`${opts.op}: device closed`, { op: opts.op, device: lane.device }),
      );
    }
    if (lane.hung) {
      return Promise.reject(
        new NotSentError(`${opts.op}: device hung (a call is past its time limit); not sent`, {
          op: opts.op,
          device: lane.device,
        }),
      );
    }
    return this.#submit(lane, req, opts);
  }

  /** @internal NativeHandle.close */
  closeLane(lane: Lane, timeoutMs: number): Promise<void> {
    if (lane.closing) return lane.closing;
    for (const j of lane.queue.splice(0)) {
      this.#settle(
        j,
        new NotSentError(`${j.op}: device closed before the call was sent`, {
          op: j.op,
          device: lane.device,
        }),
      );
    }
    const closed = new Promise<void>((resolve) => {
      lane.startClose = () => {
        lane.startClose = null;
        this.#closeLater(lane.fd, () => {
          this.#lanes.delete(lane);
          resolve();
        });
      };
    });
    // The close waits for the running call (it may never return): the caller waits until
    // `timeoutMs` or the call's own time limit, whichever comes first; the fd is closed when
    // the call returns, whenever that is. Waiting on a call already past its limit would
    // only delay the caller (a CLI would print its error seconds late, or, its timer
    // unref'd, never: the event loop ends with the wait unsettled).
    const gaveUp = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      lane.stopWaiting = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    lane.closing = Promise.race([closed, gaveUp]);
    if (!lane.current) lane.startClose?.();
    if (lane.hung) lane.stopWaiting?.();
    return lane.closing;
  }

  #closeLater(fd: number, done?: () => void): void {
    const job = this.#newJob(
      null,
      { kind: 'close', fd },
      'close',
      () => done?.(),
      () => done?.(),
    );
    this.#enqueueForThread(job);
  }

  #newJob(
    lane: Lane | null,
    req: NativeRequest,
    op: string,
    resolve: (r: NativeReply) => void,
    reject: (e: Error) => void,
    late?: (r: NativeReply) => void,
  ): Job {
    return {
      req,
      op,
      lane,
      state: 'queued',
      settled: false,
      resolve,
      reject,
      ...(late ? { late } : {}),
      cleanup: () => {},
    };
  }

  #submit(
    lane: Lane | null,
    req: NativeRequest,
    opts: CallOptions,
    late?: (r: NativeReply) => void,
  ): Promise<NativeReply> {
    return new Promise<NativeReply>((resolve, reject) => {
      const job = this.#newJob(lane, req, opts.op, resolve, reject, late);
      const device = lane?.device ?? (req.kind === 'open' ? req.path : '');
      const timer = setTimeout(() => this.#expire(job, device, opts.timeoutMs), opts.timeoutMs);
      const onAbort = () => this.#abort(job, device);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      job.cleanup = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      if (opts.signal?.aborted) {
        job.cleanup();
        reject(new NotSentError(`${opts.op}: aborted before it was sent`, { op: opts.op, device }));
        return;
      }
      if (lane) {
        lane.queue.push(job);
        this.#pump(lane);
      } else {
        this.#enqueueForThread(job);
      }
    });
  }

  /** Starts the lane's next call if none is in flight. */
  #pump(lane: Lane): void {
    if (lane.current) return;
    const next = lane.queue.shift();
    if (next) {
      lane.current = next;
      this.#enqueueForThread(next);
    } else {
      lane.startClose?.();
    }
  }

  #enqueueForThread(job: Job): void {
    job.state = 'waiting';
    this.#waiting.push(job);
    this.#dispatch();
  }

  #dispatch(): void {
    while (this.#waiting.length > 0) {
      const t = this.#idle.pop();
      if (!t) {
        // Start threads for the calls waiting (each joins the pool once it is up).
        let starting = 0;
        for (const x of this.#all) if (x.starting) starting++;
        if (starting < this.#waiting.length && this.#spawn()) continue;
        return;
      }
      this.#run(t, this.#waiting.shift()!);
    }
  }

  /** Starts a thread if the pool and the hard limit allow; it joins the idle pool when up. */
  #spawn(): PoolThread | undefined {
    let working = 0;
    for (const t of this.#all) if (!t.stuck) working++;
    if (working >= this.#poolSize || this.#all.size >= this.#maxThreads) return undefined;
    const t: PoolThread = { t: this.#backend.spawn(), starting: true, stuck: false };
    this.#all.add(t);
    const limit = setTimeout(
      () => fail(new Error(`did not start within ${START_LIMIT_MS} ms`)),
      START_LIMIT_MS,
    );
    limit.unref();
    const fail = (e: unknown) => {
      clearTimeout(limit);
      if (!t.starting) return;
      t.starting = false;
      this.#all.delete(t);
      t.t.terminate();
      // Calls waiting for a thread were never sent: fail them rather than retry forever.
      for (const j of this.#waiting.splice(0)) {
        this.#unqueueWaiting(j);
        this.#settle(
          j,
          new NotSentError(`${j.op}: no native thread: ${String(e)}`, {
            op: j.op,
            device: j.lane?.device ?? '',
          }),
        );
      }
    };
    t.t.ready.then(() => {
      clearTimeout(limit);
      if (!t.starting) return;
      t.starting = false;
      t.t.ref(false);
      this.#idle.push(t);
      this.#dispatch();
    }, fail);
    return t;
  }

  /** A waiting job leaves: its lane may start its next call. */
  #unqueueWaiting(job: Job): void {
    job.state = 'done';
    const lane = job.lane;
    if (lane && lane.current === job) {
      lane.current = null;
      this.#pump(lane);
    }
  }

  #run(t: PoolThread, job: Job): void {
    job.state = 'running';
    job.thread = t;
    t.t.ref(true);
    t.t.run(job.req).then(
      (reply) => this.#finished(t, job, reply, undefined),
      (e: unknown) => this.#finished(t, job, undefined, e instanceof Error ? e : new Error(String(e))),
    );
  }

  #finished(t: PoolThread, job: Job, reply: NativeReply | undefined, err: Error | undefined): void {
    job.state = 'done';
    job.cleanup();
    // The thread: back to the pool, or ended if it was stuck and the pool is full again,
    // or dropped if it failed.
    if (err) {
      this.#all.delete(t);
    } else if (t.stuck) {
      t.stuck = false;
      let working = 0;
      for (const x of this.#all) if (!x.stuck) working++;
      if (working > this.#poolSize) {
        this.#all.delete(t);
        t.t.terminate();
      } else {
        t.t.ref(false);
        this.#idle.push(t);
      }
    } else {
      t.t.ref(false);
      this.#idle.push(t);
    }
    // The caller.
    if (!job.settled) {
      job.settled = true;
      if (reply) job.resolve(reply);
      else {
        const d = { op: job.op, device: job.lane?.device ?? '', cause: err };
        job.reject(
          err instanceof NativeThreadGoneError
            ? new NotSentError(`${job.op}: native thread gone before the call: ${String(err)}`, d)
            : new IndeterminateError(`${job.op}: native thread failed: ${String(err)}`, d),
        );
      }
    } else if (reply) {
      job.late?.(reply);
    }
    // The device: the stuck call is back, so it takes calls again.
    const lane = job.lane;
    if (lane && lane.current === job) {
      lane.current = null;
      lane.hung = false;
      this.#pump(lane);
    }
    this.#dispatch();
  }

  #settle(job: Job, e: Error): void {
    if (job.settled) return;
    job.settled = true;
    if (job.state !== 'running') job.cleanup();
    job.reject(e);
  }

  /** Takes a not-yet-running job out of every queue. */
  #unqueue(job: Job): void {
    const lane = job.lane;
    if (job.state === 'queued' && lane) {
      const i = lane.queue.indexOf(job);
      if (i >= 0) lane.queue.splice(i, 1);
    } else if (job.state === 'waiting') {
      const i = this.#waiting.indexOf(job);
      if (i >= 0) this.#waiting.splice(i, 1);
      if (lane && lane.current === job) {
        lane.current = null;
        this.#pump(lane);
      }
    }
    job.state = 'done';
  }

  #abort(job: Job, device: string): void {
    if (job.settled) return;
    if (job.state === 'running') {
      // The call goes on; its deadline still marks the device hung if it does not return.
      this.#settle(
        job,
        new IndeterminateError(`${job.op}: aborted while running; outcome unknown`, { op: job.op, device }),
      );
      return;
    }
    this.#unqueue(job);
    this.#settle(job, new NotSentError(`${job.op}: aborted before it was sent`, { op: job.op, device }));
  }

  #expire(job: Job, device: string, timeoutMs: number): void {
    if (job.state !== 'running') {
      this.#unqueue(job);
      this.#settle(
        job,
        new NotSentError(`${job.op}: not sent within ${timeoutMs} ms (queued behind other calls)`, {
          op: job.op,
          device,
        }),
      );
      return;
    }
    // Running past its limit: the thread is stuck, the device hung.
    const t = job.thread!;
    t.stuck = true;
    t.t.ref(false);
    const lane = job.lane;
    if (lane) {
      lane.hung = true;
      lane.stopWaiting?.(); // a close() waiting on this call returns now
      for (const j of lane.queue.splice(0)) {
        this.#settle(
          j,
          new NotSentError(`${j.op}: device hung (a call is past its time limit); not sent`, {
            op: j.op,
            device,
          }),
        );
      }
    }
    const e =
      job.req.kind === 'open'
        ? new NotSentError(`open: no answer within ${timeoutMs} ms`, { op: 'open', device })
        : new IndeterminateError(`${job.op}: no answer within ${timeoutMs} ms; outcome unknown`, {
            op: job.op,
            device,
          });
    this.#settle(job, e);
    this.#dispatch(); // a replacement thread may start now
  }
}

/**
 * One open fd on an executor. All calls on it run one at a time, in order; `close()`
 * closes the fd after the last of them returned.
 */
export class NativeHandle {
  readonly #ex: NativeExecutor;
  readonly #lane: Lane;

  /** @internal use NativeExecutor.open */
  constructor(ex: NativeExecutor, lane: Lane) {
    this.#ex = ex;
    this.#lane = lane;
  }

  get fd(): number {
    return this.#lane.fd;
  }
  /** A call is running past its time limit: new calls fail fast with NotSentError until it returns. */
  get hung(): boolean {
    return this.#lane.hung;
  }
  get closed(): boolean {
    return this.#lane.closing !== null;
  }

  /**
   * Runs one call on this fd. Resolves with the raw reply (the caller classifies it);
   * rejects NotSentError (closed, hung, queued past the limit, aborted while queued) or
   * IndeterminateError (running at the time limit or when aborted).
   */
  call(req: DeviceRequest, opts: CallOptions): Promise<NativeReply> {
    return this.#ex.callOn(this.#lane, { ...req, fd: this.#lane.fd } as NativeRequest, opts);
  }

  /**
   * Rejects queued calls (NotSent), lets the running one finish, then closes the fd.
   * Resolves when the fd is closed, or after `timeoutMs` with the close still scheduled
   * behind a stuck call. Idempotent.
   */
  close(timeoutMs = 10_000): Promise<void> {
    return this.#ex.closeLane(this.#lane, timeoutMs);
  }
}

/** Worker threads loading koffi (native-worker.ts); found next to this module, in src (.ts) or dist (.js). */
export function workerThreadBackend(): NativeBackend {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const url = new URL(`./native-worker${ext}`, import.meta.url);
  return {
    spawn(): NativeThread {
      const w = new Worker(url);
      w.unref();
      let next = 0;
      let gone: Error | undefined;
      const pending = new Map<number, { resolve(r: NativeReply): void; reject(e: Error): void }>();
      let started!: { resolve(): void; reject(e: Error): void };
      const ready = new Promise<void>((resolve, reject) => (started = { resolve, reject }));
      const failAll = (e: Error) => {
        started.reject(e);
        gone ??= e;
        for (const p of pending.values()) p.reject(e);
        pending.clear();
      };
      w.on('message', (m: { id: number; reply?: NativeReply; error?: string; ready?: boolean }) => {
        if (m.ready) {
          started.resolve();
          return;
        }
        const p = pending.get(m.id);
        if (!p) return;
        pending.delete(m.id);
        if (m.reply) p.resolve(m.reply);
        else p.reject(new Error(m.error ?? 'native worker error'));
      });
      w.on('error', (e) => failAll(e));
      w.on('exit', (code) => failAll(new Error(`native worker exited (${code})`)));
      return {
        ready,
        run(req) {
          return new Promise((resolve, reject) => {
            if (gone) {
              reject(new NativeThreadGoneError(gone.message, { cause: gone }));
              return;
            }
            const id = next++;
            pending.set(id, { resolve, reject });
            w.postMessage({ id, req });
          });
        },
        ref(on) {
          if (on) w.ref();
          else w.unref();
        },
        terminate() {
          void w.terminate();
        },
      };
    },
  };
}

/** Threads that run calls in-process against a given libc (tests, benchmarks): see fake-libc.ts. */
export function inProcessBackend(libc: CallLibc): NativeBackend {
  return {
    spawn: () => ({
      ready: Promise.resolve(),
      run: (req) => runNativeCall(req, libc),
      ref() {},
      terminate() {},
    }),
  };
}

/**
 * The process-wide executor used when a caller passes none, created on first use.
 * Module state by necessity: the thread pool is a process resource, and the device
 * layer's public `open(path, opts)` must work without wiring. Long-lived callers (the
 * agent) create one executor and pass it explicitly.
 */
let shared: NativeExecutor | undefined;
export function defaultNativeExecutor(): NativeExecutor {
  shared ??= new NativeExecutor();
  return shared;
}
