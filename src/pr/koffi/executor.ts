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
 *   threads, stuck ones included. A thread idle for `idleThreadMs` ends, down to
 *   `keepThreads` (java.util.concurrent's keepAliveTime, in spirit): a worker costs about
 *   20 MiB of RSS while it lives, and ending one gives about 5 MiB back (`npm run bench`,
 *   executor section), so a burst does not leave the process at its peak for good.
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
 * - Batches (`callMany`, or calls made with a `CallBatch`): the calls of many devices are
 *   handed to the threads as a few chunks (one message per thread, not one round trip per
 *   call). Every rule above holds per call: its own time limit from submission, one call
 *   in flight per device, hung marking and thread replacement. A thread answers each call
 *   of its chunk as soon as it returned; calls of a chunk not yet started are taken back
 *   (an atomic claim per call, native-call.ts) by any thread that runs out of work, so a
 *   hung call holds back only itself; at their limit they fail unsent. One timer per batch
 *   sweeps the deadlines.
 */
import { Worker } from 'node:worker_threads';
import { CallBatch, type BatchSink } from '../call-batch.js';
import { IndeterminateError, NotSentError } from '../errors.js';
import { classifyErrno } from './classify.js';
import {
  answerOf,
  CALL_DONE,
  CALL_PENDING,
  CALL_RUNNING,
  CALL_TAKEN,
  encodeBatch,
  runNativeCalls,
  type ChunkEvents,
  type NativeChunk,
  type SharedBatch,
} from './native-batch.js';
import { runNativeCall, type CallLibc, type NativeReply, type NativeRequest } from './native-call.js';

/** One thread that runs native calls, one at a time. */
export interface NativeThread {
  /** Settles when the thread can take calls (a worker has loaded koffi), or failed to start. */
  readonly ready: Promise<void>;
  /** Runs one call; settles whenever the call returns (there is no time limit here). */
  run(req: NativeRequest): Promise<NativeReply>;
  /**
   * Runs a chunk of a batch in order (native-call.ts `runNativeCalls`): claims each call
   * first, skips those taken back, writes each answer to the chunk's shared memory as soon
   * as its call returned and rings. Settles when the chunk is through (no time limit
   * here); rejects if the thread is gone.
   */
  runMany(chunk: NativeChunk, events: ChunkEvents): Promise<void>;
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
  /** A thread idle this long ends, unless only `keepThreads` are left. Default 60 s. */
  idleThreadMs?: number;
  /** Threads kept however long they are idle. Default 1. */
  keepThreads?: number;
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
  /**
   * Joins this batch while it is open (sent with the batch's other calls on its flush), if
   * the device has no call in flight or queued and `signal` is the batch's or none;
   * otherwise the call is sent on its own.
   */
  readonly batch?: CallBatch | undefined;
}

/** One call of a batch (`callMany`). */
export interface BatchCall {
  readonly handle: NativeHandle;
  readonly req: DeviceRequest;
  readonly op: string;
  /** Time limit from submission, queueing included (ms). */
  readonly timeoutMs: number;
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
  /** A batch call: where it is and when its time is up. */
  entry?: BatchEntry;
}

interface BatchEntry {
  readonly run: BatchRun;
  /** The call's index in its batch (where its answer goes). */
  readonly index: number;
  /** performance.now() at which the call's time limit is up (counted from submission). */
  readonly deadline: number;
  readonly timeoutMs: number;
  /**
   * The chunk holding the call now, and its slot there: null until the batch is sent; it
   * moves when the call is taken back for another thread.
   */
  chunk: Chunk | null;
  slot: number;
  /** Past its limit while running: settled, the device hung; only its return is awaited. */
  expired: boolean;
}

/** Calls of a batch handed to one thread in one message. */
interface Chunk {
  readonly run: BatchRun;
  /** Per slot. */
  readonly jobs: Job[];
  /** CALL_* per slot, shared with the thread (native-call.ts). */
  readonly claims: Int32Array;
  thread: PoolThread | null;
  /** Slots before this one are answered, failed or taken back. */
  cursor: number;
}

/** The calls of one batch: its shared memory, one deadline timer and one abort listener for all. */
interface BatchRun {
  /** Per index. */
  readonly jobs: Job[];
  shared: SharedBatch | null;
  /** Calls whose limit is still to watch (neither over nor past it): the timer and listener go at 0. */
  watching: number;
  signal: AbortSignal | undefined;
  timer: NodeJS.Timeout | undefined;
  onAbort: (() => void) | undefined;
}

interface PoolThread {
  readonly t: NativeThread;
  /** Still booting: counted in the pool, given no call yet. */
  starting: boolean;
  stuck: boolean;
  /** performance.now() when it last went idle. */
  idleSince: number;
}

const noop = () => {};

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

export class NativeExecutor implements BatchSink {
  readonly #backend: NativeBackend;
  readonly #poolSize: number;
  readonly #maxThreads: number;
  readonly #idleThreadMs: number;
  readonly #keepThreads: number;
  #reaper: NodeJS.Timeout | undefined;
  readonly #idle: PoolThread[] = [];
  readonly #all = new Set<PoolThread>();
  readonly #waiting: Job[] = [];
  readonly #lanes = new Set<Lane>();
  /** Batch calls added and not yet flushed, per batch. */
  readonly #joining = new Map<CallBatch, BatchRun>();
  /** Chunks waiting for a thread, and chunks on a thread. */
  readonly #chunks: Chunk[] = [];
  readonly #running = new Set<Chunk>();

  constructor(opts: NativeExecutorOptions = {}) {
    this.#backend = opts.backend ?? workerThreadBackend();
    this.#poolSize = opts.poolSize ?? 4;
    this.#maxThreads = Math.max(opts.maxThreads ?? 32, this.#poolSize);
    this.#idleThreadMs = opts.idleThreadMs ?? 60_000;
    this.#keepThreads = opts.keepThreads ?? 1;
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
    for (const run of this.#joining.values()) queued += run.jobs.length;
    for (const c of this.#chunks) for (const j of c.jobs) if (j.state !== 'done') queued++;
    for (const c of this.#running) {
      for (let k = c.cursor; k < c.jobs.length; k++) if (Atomics.load(c.claims, k) === CALL_PENDING) queued++;
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
    clearTimeout(this.#reaper);
    this.#reaper = undefined;
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
    const b = opts.batch;
    if (
      b?.open &&
      !lane.current &&
      lane.queue.length === 0 &&
      (opts.signal === undefined || opts.signal === b.signal)
    ) {
      return this.#join(b, lane, req, opts);
    }
    return this.#submit(lane, req, opts);
  }

  /**
   * Runs calls on many devices as one batch (see the class doc). Returns one promise per
   * call, in order, each settling as `NativeHandle.call` would, on its own: a hung call
   * delays no other call's answer.
   */
  callMany(calls: readonly BatchCall[], opts: { signal?: AbortSignal } = {}): Promise<NativeReply>[] {
    const batch = new CallBatch(opts);
    const out = calls.map((c) =>
      c.handle.call(c.req, { op: c.op, timeoutMs: c.timeoutMs, signal: opts.signal, batch }),
    );
    batch.flush();
    return out;
  }

  /** A batch call: holds its device's lane (later calls queue behind it) until the batch is sent. */
  #join(batch: CallBatch, lane: Lane, req: NativeRequest, opts: CallOptions): Promise<NativeReply> {
    let run = this.#joining.get(batch);
    if (!run) {
      run = {
        jobs: [],
        shared: null,
        watching: 0,
        signal: batch.signal,
        timer: undefined,
        onAbort: undefined,
      };
      this.#joining.set(batch, run);
      batch.enlist(this);
    }
    const { jobs } = run;
    const entry: BatchEntry = {
      run,
      index: jobs.length,
      deadline: performance.now() + opts.timeoutMs,
      timeoutMs: opts.timeoutMs,
      chunk: null,
      slot: 0,
      expired: false,
    };
    return new Promise<NativeReply>((resolve, reject) => {
      const job = this.#newJob(lane, req, opts.op, resolve, reject);
      job.state = 'waiting';
      job.entry = entry;
      lane.current = job;
      jobs.push(job);
    });
  }

  /** @internal CallBatch.flush: the batch's calls go out as one chunk per pool thread. */
  sendBatch(batch: CallBatch): void {
    const run = this.#joining.get(batch);
    this.#joining.delete(batch);
    if (!run) return;
    const { jobs } = run;
    run.shared = encodeBatch(jobs.map((j) => j.req));
    run.watching = jobs.length;
    const per = Math.ceil(jobs.length / Math.min(this.#poolSize, jobs.length));
    for (let i = 0; i < jobs.length; i += per) {
      const claims = run.shared.claims.subarray(i, i + per);
      this.#chunks.push(this.#chunk(run, jobs.slice(i, i + per), claims));
    }
    if (run.signal) {
      run.onAbort = () => this.#abortBatch(run);
      run.signal.addEventListener('abort', run.onAbort, { once: true });
      if (run.signal.aborted) run.onAbort();
    }
    this.#armSweep(run);
    this.#dispatch();
  }

  /** A chunk of batch calls, each pointing at its slot in it; its claims shared with the thread. */
  #chunk(
    run: BatchRun,
    jobs: Job[],
    claims: Int32Array = new Int32Array(new SharedArrayBuffer(4 * jobs.length)),
  ): Chunk {
    const chunk: Chunk = { run, jobs, claims, thread: null, cursor: 0 };
    for (let k = 0; k < jobs.length; k++) {
      const e = jobs[k]!.entry!;
      e.chunk = chunk;
      e.slot = k;
    }
    return chunk;
  }

  /** Arms the batch's one timer at its earliest deadline still to watch. */
  #armSweep(run: BatchRun): void {
    if (run.watching === 0) return;
    let next = Infinity;
    for (const j of run.jobs) {
      const e = j.entry!;
      if (j.state !== 'done' && !e.expired && e.deadline < next) next = e.deadline;
    }
    run.timer = setTimeout(() => this.#sweep(run), Math.max(0, next - performance.now()));
  }

  /** A batch call is over or past its limit: once none is left to watch, the timer and listener go. */
  #unwatch(run: BatchRun): void {
    if (--run.watching > 0) return;
    clearTimeout(run.timer);
    run.timer = undefined;
    if (run.onAbort) run.signal?.removeEventListener('abort', run.onAbort);
  }

  #sweep(run: BatchRun): void {
    // setTimeout counts whole milliseconds: a deadline within 1 ms is due.
    const now = performance.now() + 1;
    for (const j of run.jobs) {
      const e = j.entry!;
      if (j.state !== 'done' && !e.expired && e.deadline <= now) this.#expireEntry(j);
    }
    this.#armSweep(run);
  }

  /**
   * Takes a sent batch call back if no thread started it, or takes its answer if one is
   * written: true if either (the call is over: never sent, or answered).
   */
  #takeBack(job: Job, err: () => Error): boolean {
    const { chunk, slot } = job.entry!;
    const s = Atomics.compareExchange(chunk!.claims, slot, CALL_PENDING, CALL_TAKEN);
    if (s === CALL_PENDING) this.#entryDone(job, err());
    else if (s === CALL_DONE) this.#entryDone(job, answerOf(chunk!.run.shared!, job.entry!.index, job.req));
    else return false;
    return true;
  }

  /** A batch call at its limit: unsent if no thread started it, else as a single call running past its limit. */
  #expireEntry(job: Job): void {
    const e = job.entry!;
    e.expired = true;
    this.#unwatch(e.run);
    const device = job.lane?.device ?? '';
    const notSent = () =>
      new NotSentError(`${job.op}: not sent within ${e.timeoutMs} ms (queued behind other calls)`, {
        op: job.op,
        device,
      });
    // A call that threw (FAILED) is settled by its thread's message.
    if (this.#takeBack(job, notSent) || Atomics.load(e.chunk!.claims, e.slot) !== CALL_RUNNING) return;
    job.state = 'running';
    // Claimed: by the thread its chunk was given to.
    this.#pastLimit(job, e.chunk!.thread!);
    this.#settle(
      job,
      new IndeterminateError(`${job.op}: no answer within ${e.timeoutMs} ms; outcome unknown`, {
        op: job.op,
        device,
      }),
    );
    this.#dispatch(); // a replacement thread may start now
  }

  /** The batch's signal: unstarted calls NotSent (never sent); running ones Indeterminate (their limit still marks the device hung). */
  #abortBatch(run: BatchRun): void {
    for (const j of run.jobs) {
      if (j.state === 'done' || j.settled) continue;
      const d = { op: j.op, device: j.lane?.device ?? '' };
      if (!this.#takeBack(j, () => new NotSentError(`${j.op}: aborted before it was sent`, d)))
        this.#settle(j, new IndeterminateError(`${j.op}: aborted while running; outcome unknown`, d));
    }
  }

  /** A batch call is over (answered, failed, or taken back unsent): its caller told, its device free. */
  #entryDone(job: Job, result: NativeReply | Error): void {
    job.state = 'done';
    if (!job.entry!.expired) this.#unwatch(job.entry!.run);
    if (!job.settled) {
      job.settled = true;
      if (result instanceof Error) job.reject(result);
      else job.resolve(result);
    }
    const lane = job.lane;
    if (lane && lane.current === job) {
      lane.current = null;
      lane.hung = false;
      this.#pump(lane);
    }
  }

  #runChunk(t: PoolThread, chunk: Chunk): void {
    chunk.thread = t;
    this.#running.add(chunk);
    t.t.ref(true);
    const run = chunk.run;
    t.t
      .runMany(
        {
          batch: run.shared!,
          indices: Int32Array.from(chunk.jobs, (j) => j.entry!.index),
          claims: chunk.claims,
        },
        {
          ring: () => this.#collect(run),
          failed: (k, e) => {
            const j = chunk.jobs[k]!;
            if (j.state !== 'done')
              this.#entryDone(
                j,
                new IndeterminateError(`${j.op}: native thread failed: ${String(e)}`, {
                  op: j.op,
                  device: j.lane?.device ?? '',
                  cause: e,
                }),
              );
          },
        },
      )
      .then(
        () => this.#chunkDone(t, chunk, undefined),
        (e: unknown) => this.#chunkDone(t, chunk, e instanceof Error ? e : new Error(String(e))),
      );
  }

  /** The doorbell rang: hands the answers written so far to their callers. */
  #collect(run: BatchRun): void {
    // Cleared before looking: an answer written after this rings again (native-call.ts).
    Atomics.store(run.shared!.bell, 0, 0);
    for (const c of this.#running) if (c.run === run) this.#collectChunk(c);
  }

  /** Answers of a chunk in slot order, up to its first call not yet over. */
  #collectChunk(c: Chunk): void {
    const shared = c.run.shared!;
    for (; c.cursor < c.jobs.length; c.cursor++) {
      const s = Atomics.load(c.claims, c.cursor);
      if (s === CALL_PENDING || s === CALL_RUNNING) return;
      const j = c.jobs[c.cursor]!;
      if (s === CALL_DONE && j.state !== 'done') this.#entryDone(j, answerOf(shared, j.entry!.index, j.req));
    }
  }

  #chunkDone(t: PoolThread, chunk: Chunk, err: Error | undefined): void {
    this.#collectChunk(chunk);
    this.#running.delete(chunk);
    if (err) {
      // The thread is gone: a call it started has an unknown outcome; the others were never sent.
      for (const j of chunk.jobs) {
        if (j.state === 'done' || j.entry!.chunk !== chunk) continue;
        const d = { op: j.op, device: j.lane?.device ?? '', cause: err };
        if (
          !this.#takeBack(
            j,
            () => new NotSentError(`${j.op}: native thread gone before the call: ${String(err)}`, d),
          )
        )
          this.#entryDone(j, new IndeterminateError(`${j.op}: native thread failed: ${String(err)}`, d));
      }
    }
    this.#threadBack(t, err);
    this.#dispatch();
  }

  /** Slots of a running chunk no thread has started, last first (the thread claims in slot order). */
  #unstarted(c: Chunk): number[] {
    const out: number[] = [];
    for (let k = c.jobs.length - 1; k >= c.cursor; k--) {
      const s = Atomics.load(c.claims, k);
      if (s === CALL_PENDING) out.push(k);
      else if (s !== CALL_TAKEN) break; // claimed: so are the slots before it
    }
    return out;
  }

  #stealable(): boolean {
    for (const c of this.#running) if (this.#unstarted(c).length > 0) return true;
    return false;
  }

  /**
   * For an idle thread: takes back the later half of the unstarted calls of the running
   * chunk with the most of them (behind a hung call, or just a slower thread) as a new
   * chunk. False if there is none.
   */
  #steal(): boolean {
    let best: Chunk | undefined;
    let bestPending: number[] = [];
    for (const c of this.#running) {
      const pending = this.#unstarted(c);
      if (pending.length > bestPending.length) {
        best = c;
        bestPending = pending;
      }
    }
    if (!best) return false;
    const taken: Job[] = [];
    for (const k of bestPending.slice(0, Math.ceil(bestPending.length / 2))) {
      // The thread got there first: it has claimed the earlier ones too.
      if (Atomics.compareExchange(best.claims, k, CALL_PENDING, CALL_TAKEN) !== CALL_PENDING) break;
      taken.push(best.jobs[k]!);
    }
    if (taken.length === 0) return false;
    this.#chunks.push(this.#chunk(best.run, taken.reverse()));
    return true;
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
      cleanup: noop,
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
    for (;;) {
      const queued = this.#waiting.length + this.#chunks.length;
      // Besides queued work: batch calls not yet started on a busy (maybe stuck) thread.
      if (queued === 0 && !this.#stealable()) return;
      const t = this.#idle.pop();
      if (!t) {
        // Start threads for the work waiting (each joins the pool once it is up).
        let starting = 0;
        for (const x of this.#all) if (x.starting) starting++;
        if (starting < Math.max(queued, 1) && this.#spawn()) continue;
        return;
      }
      // Single calls first: a PR OUT of a reconcile does not wait behind a probe round.
      if (this.#waiting.length > 0) this.#run(t, this.#waiting.shift()!);
      else if (this.#chunks.length > 0 || this.#steal()) this.#runChunk(t, this.#chunks.shift()!);
      else {
        this.#idle.push(t);
        return;
      }
    }
  }

  /** Starts a thread if the pool and the hard limit allow; it joins the idle pool when up. */
  #spawn(): PoolThread | undefined {
    let working = 0;
    for (const t of this.#all) if (!t.stuck) working++;
    if (working >= this.#poolSize || this.#all.size >= this.#maxThreads) return undefined;
    const t: PoolThread = { t: this.#backend.spawn(), starting: true, stuck: false, idleSince: 0 };
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
      for (const c of this.#chunks.splice(0)) {
        for (const j of c.jobs) {
          const d = { op: j.op, device: j.lane?.device ?? '' };
          if (j.state !== 'done')
            this.#takeBack(j, () => new NotSentError(`${j.op}: no native thread: ${String(e)}`, d));
        }
      }
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
      this.#toIdle(t);
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
    this.#threadBack(t, err);
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

  /**
   * A thread's call or chunk returned: the thread goes back to the pool, or ends if it was
   * stuck and the pool is full again, or is dropped if it failed.
   */
  #threadBack(t: PoolThread, err: Error | undefined): void {
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
        this.#toIdle(t);
      }
    } else {
      t.t.ref(false);
      this.#toIdle(t);
    }
  }

  /** Threads that are not stuck (starting, busy or idle). */
  #unstuck(): number {
    let n = 0;
    for (const t of this.#all) if (!t.stuck) n++;
    return n;
  }

  /** `t` has nothing to run: to the top of the idle stack (the next call takes it). */
  #toIdle(t: PoolThread): void {
    t.idleSince = performance.now();
    this.#idle.push(t);
    this.#armReaper();
  }

  /**
   * Ends threads idle for `idleThreadMs`, oldest first, while more than `keepThreads`
   * are alive. The idle stack is LIFO, so under light load the same thread keeps taking
   * the calls and the others age out. Stuck threads end by #threadBack, not here.
   */
  #armReaper(): void {
    if (this.#reaper !== undefined || this.#idle.length === 0 || this.#unstuck() <= this.#keepThreads) return;
    const oldest = this.#idle[0]!.idleSince;
    const wait = Math.max(0, oldest + this.#idleThreadMs - performance.now());
    this.#reaper = setTimeout(() => {
      this.#reaper = undefined;
      const now = performance.now();
      while (
        this.#idle.length > 0 &&
        this.#unstuck() > this.#keepThreads &&
        now - this.#idle[0]!.idleSince >= this.#idleThreadMs
      ) {
        const t = this.#idle.shift()!;
        this.#all.delete(t);
        t.t.terminate();
      }
      this.#armReaper();
    }, wait);
    this.#reaper.unref();
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

  /** A call running past its limit: its thread is stuck, its device hung (queued calls fail unsent). */
  #pastLimit(job: Job, t: PoolThread): void {
    t.stuck = true;
    t.t.ref(false);
    const lane = job.lane;
    if (!lane) return;
    lane.hung = true;
    lane.stopWaiting?.(); // a close() waiting on this call returns now
    for (const j of lane.queue.splice(0)) {
      this.#settle(
        j,
        new NotSentError(`${j.op}: device hung (a call is past its time limit); not sent`, {
          op: j.op,
          device: lane.device,
        }),
      );
    }
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
    this.#pastLimit(job, job.thread!);
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
      interface Pending {
        resolve(r: NativeReply | undefined): void;
        reject(e: Error): void;
        events?: ChunkEvents;
      }
      const pending = new Map<number, Pending>();
      let started!: { resolve(): void; reject(e: Error): void };
      const ready = new Promise<void>((resolve, reject) => (started = { resolve, reject }));
      const failAll = (e: Error) => {
        started.reject(e);
        gone ??= e;
        for (const p of pending.values()) p.reject(e);
        pending.clear();
      };
      type Message = {
        id: number;
        ready?: boolean;
        reply?: NativeReply;
        error?: string;
        bell?: boolean;
        index?: number;
        done?: boolean;
      };
      w.on('message', (m: Message) => {
        if (m.ready) {
          started.resolve();
          return;
        }
        const p = pending.get(m.id);
        if (!p) return;
        if (m.bell) {
          p.events?.ring();
          return;
        }
        if (m.index !== undefined) {
          p.events?.failed(m.index, new Error(m.error ?? 'native worker error'));
          return;
        }
        pending.delete(m.id);
        if (m.reply || m.done) p.resolve(m.reply);
        else p.reject(new Error(m.error ?? 'native worker error'));
      });
      w.on('error', (e) => failAll(e));
      w.on('exit', (code) => failAll(new Error(`native worker exited (${code})`)));
      /** Posts `msg` with a fresh id; settles on the worker's final answer to it. */
      const send = (msg: object, events?: ChunkEvents) =>
        new Promise<NativeReply | undefined>((resolve, reject) => {
          if (gone) {
            reject(new NativeThreadGoneError(gone.message, { cause: gone }));
            return;
          }
          const id = next++;
          pending.set(id, { resolve, reject, ...(events ? { events } : {}) });
          w.postMessage({ id, ...msg });
        });
      return {
        ready,
        run: async (req) => (await send({ req }))!,
        runMany: async (chunk, events) => void (await send({ chunk }, events)),
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
      runMany: (chunk, events) => runNativeCalls(chunk, libc, events),
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
