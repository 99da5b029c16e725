/**
 * dm-multipath path changes in the VolumeReconciler (docs/design.md "Multipath"): a path
 * added under the map after the own key was registered carries no registration; the agent
 * registers the own key again through the map (REGISTER AND IGNORE EXISTING KEY), as a
 * register: behind the fresh view, never when its key is gone (S2) or it may not
 * register, and not at all when the path set did not change. The map is a memory model of
 * dm.c's forwarding (memory-multipath.ts); the caches and the fresh view are plain data.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { DeviceRegistry } from '../../../src/agent/device-registry.js';
import { PathWatch } from '../../../src/agent/path-watch.js';
import { formatKey } from '../../../src/pr/key.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import { memoryMultipath } from '../pr/memory-multipath.js';
import { K, PV, reconcilerOf, type World } from './multipath-world.js';

const log = pino({ level: process.env.TLOG ?? 'silent' });

/**
 * Node a on a two-path map (a1, a2) of one LU, node b (another host) on its own initiator;
 * the API world is `api` for both the caches and the fresh view unless `fresh` says.
 */
async function setup(api: () => World, opts: { fresh?: () => World; down?: () => boolean } = {}) {
  const lu = new MemoryLogicalUnit({ id: 'lu' });
  const mp = memoryMultipath(lu, ['a1', 'a2']);
  const w = await reconcilerOf(
    () => Promise.resolve(mp.device),
    () => Promise.resolve(mp.paths()),
    api,
    opts,
  );
  return { lu, mp, ...w };
}

const keysOf = (lu: MemoryLogicalUnit) =>
  lu
    .state()
    .registrations.map((x) => `${x.initiator}=${formatKey(x.key)}`)
    .sort();

describe('multipath: a path added under the map', () => {
  it('registered through two paths, a third added -> refused writes through it until the next reconcile registers the own key again (REGISTER AND IGNORE, after a fresh view); then accepted, and an event says so', async () => {
    const { lu, mp, fresh, writer, r } = await setup(() => ({ vas: ['a'] }));
    await r.reconcile(PV, log);
    expect(keysOf(lu)).toEqual([`a1=${formatKey(K.a)}`, `a2=${formatKey(K.a)}`]);
    expect(lu.state().reservation?.type).toBe('write-exclusive-all-regs');
    mp.addPath('a3');
    expect(lu.write('a3')).toBe('refused');
    const readsBefore = fresh.reads();
    mp.sent.length = 0;
    const res = await r.reconcile(PV, log);
    expect({
      outcome: res.outcome,
      sent: mp.sent,
      freshReads: fresh.reads() - readsBefore,
      keys: keysOf(lu),
      write: lu.write('a3'),
      events: writer.events,
    }).toEqual({
      outcome: 'done',
      sent: [`register-ignore ${K.a}`],
      freshReads: 1,
      keys: [`a1=${formatKey(K.a)}`, `a2=${formatKey(K.a)}`, `a3=${formatKey(K.a)}`],
      write: 'ok',
      events: [['a3']],
    });
    // Once: the next reconcile sees the path set its key was registered through.
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect(mp.sent).toEqual([]);
  });

  it('the path set did not change -> no command and no fresh view on later reconciles', async () => {
    const { mp, fresh, r } = await setup(() => ({ vas: ['a'] }));
    await r.reconcile(PV, log);
    const reads = fresh.reads();
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    await r.reconcile(PV, log);
    expect({ sent: mp.sent, freshReads: fresh.reads() - reads }).toEqual({ sent: [], freshReads: 0 });
  });

  it('S2: the own key was removed by a peer (fenced) and a path is added -> never registered again: no REGISTER of any kind, the new path stays refused', async () => {
    let api: World = { vas: ['a', 'b'] };
    const { lu, mp, r, memory } = await setup(() => api);
    await r.reconcile(PV, log);
    // Node b fences node a on the device; the API now says a is asked to be fenced.
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').preemptAndAbort(K.b, K.a, 'write-exclusive-all-regs');
    api = { vas: ['a', 'b'], fenceRequested: ['a'] };
    mp.addPath('a3');
    mp.sent.length = 0;
    const res = await r.reconcile(PV, log);
    expect({
      outcome: res.outcome,
      sent: mp.sent,
      keys: keysOf(lu),
      write: lu.write('a3'),
      lost: memory.lossOf('lu') !== undefined,
    }).toEqual({
      outcome: 'blocked',
      sent: [],
      keys: [`b=${formatKey(K.b)}`],
      write: 'refused',
      lost: true,
    });
  });

  it('S2: the own key gone although the API still says the node may register -> the loss blocks it: no REGISTER AND IGNORE, no REGISTER', async () => {
    const { lu, mp, r } = await setup(() => ({ vas: ['a', 'b'] }));
    await r.reconcile(PV, log);
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').preemptAndAbort(K.b, K.a, 'write-exclusive-all-regs');
    mp.addPath('a3');
    mp.sent.length = 0;
    const res = await r.reconcile(PV, log);
    expect({ outcome: res.outcome, sent: mp.sent, write: lu.write('a3') }).toEqual({
      outcome: 'blocked',
      sent: [],
      write: 'refused',
    });
  });

  it('the node may not register (asked to be fenced; own key still there) -> no re-registration through the new path', async () => {
    let api: World = { vas: ['a'] };
    const { lu, mp, r } = await setup(() => api);
    await r.reconcile(PV, log);
    api = { vas: ['a'], fenceRequested: ['a'] };
    mp.addPath('a3');
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect({ sent: mp.sent, write: lu.write('a3') }).toEqual({ sent: [], write: 'refused' });
  });

  it('the caches allow it but the fresh view says the node is Fenced -> no re-registration (the gate of a register)', async () => {
    let freshWorld: World = { vas: ['a'] };
    const { lu, mp, r } = await setup(() => ({ vas: ['a'] }), { fresh: () => freshWorld });
    await r.reconcile(PV, log);
    freshWorld = { vas: ['a'], fenced: ['a'] };
    mp.addPath('a3');
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect(mp.sent.filter((s) => s.startsWith('register-ignore'))).toEqual([]);
    expect(lu.write('a3')).toBe('refused');
  });

  it('no fresh view (API unreachable) -> no re-registration; it happens once the API answers', async () => {
    let down = false;
    const { lu, mp, r } = await setup(() => ({ vas: ['a'] }), { down: () => down });
    await r.reconcile(PV, log);
    down = true;
    mp.addPath('a3');
    mp.sent.length = 0;
    const res = await r.reconcile(PV, log);
    expect({ outcome: res.outcome, sent: mp.sent, write: lu.write('a3') }).toEqual({
      outcome: 'no-fresh-view',
      sent: [],
      write: 'refused',
    });
    down = false;
    await r.reconcile(PV, log);
    expect({ sent: mp.sent, write: lu.write('a3') }).toEqual({
      sent: [`register-ignore ${K.a}`],
      write: 'ok',
    });
  });

  it('a device opened with the own key already on it (agent restart) -> the path set is not known to carry it: registered again once', async () => {
    const { lu, mp, r } = await setup(() => ({ vas: ['a'] }));
    await mp.device.register(0n, K.a);
    await mp.device.reserve(K.a, 'write-exclusive-all-regs');
    mp.addPath('a3'); // added while the agent was down
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect({ sent: mp.sent, write: lu.write('a3') }).toEqual({
      sent: [`register-ignore ${K.a}`],
      write: 'ok',
    });
  });
});

describe('multipath: leaving through a map with a path that never had the key', () => {
  /** Node a registered and reserved through a1, a2; then a3 is put first in the map. */
  async function registeredThenAdded(api: () => World) {
    const s = await setup(api);
    await s.r.reconcile(PV, log);
    expect(keysOf(s.lu)).toEqual([`a1=${formatKey(K.a)}`, `a2=${formatKey(K.a)}`]);
    s.mp.addPath('a3', true);
    s.mp.sent.length = 0;
    return s;
  }

  it('the map as the kernel forwards it: a plain REGISTER to key 0 conflicts on the new path, which dm.c tries first, and removes nothing (why the leave uses REGISTER AND IGNORE)', async () => {
    const { lu, mp } = await registeredThenAdded(() => ({ vas: ['a'] }));
    await expect(mp.device.register(K.a, 0n)).rejects.toMatchObject({ kind: 'conflict' });
    expect(keysOf(lu)).toEqual([`a1=${formatKey(K.a)}`, `a2=${formatKey(K.a)}`]);
  });

  it('detached -> the reconcile leaves with REGISTER AND IGNORE EXISTING KEY of key 0: the key is gone from every path, no reservation is left, nothing was registered; the next reconcile sends nothing', async () => {
    let api: World = { vas: ['a'] };
    const { lu, mp, r } = await registeredThenAdded(() => api);
    api = { vas: [] };
    const res = await r.reconcile(PV, log);
    expect({
      outcome: res.outcome,
      sent: mp.sent,
      keys: keysOf(lu),
      reservation: lu.state().reservation ?? null,
    }).toEqual({ outcome: 'done', sent: ['register-ignore 0'], keys: [], reservation: null });
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect(mp.sent).toEqual([]);
  });

  it('S2: the own key still there but the node may not register (a loss in the host fence memory, no unfence since) -> it leaves the same way, and never registers its key through the new path', async () => {
    const { lu, mp, r, memory } = await registeredThenAdded(() => ({ vas: ['a'] }));
    await memory.lost('lu', K.a, undefined, new Date(), null);
    // Left, and blocked from registering again (the loss stands until an unfence).
    expect((await r.reconcile(PV, log)).outcome).toBe('blocked');
    expect({ sent: mp.sent, keys: keysOf(lu), write: lu.write('a3') }).toEqual({
      sent: ['register-ignore 0'],
      keys: [],
      write: 'ok', // no reservation left at all: the node left, nobody fences it here
    });
  });

  it('every path known to carry the key -> the leave is the plain REGISTER to key 0', async () => {
    let api: World = { vas: ['a'] };
    const { lu, mp, r } = await setup(() => api);
    await r.reconcile(PV, log);
    api = { vas: [] };
    mp.sent.length = 0;
    await r.reconcile(PV, log);
    expect({ sent: mp.sent, keys: keysOf(lu) }).toEqual({ sent: [`register ${K.a}->0`], keys: [] });
  });
});

describe('PathWatch', () => {
  it('a device whose paths grew beyond those its key is registered through -> its PV is reconciled; unchanged, shrunk or unknown ones are not', async () => {
    const lu = new MemoryLogicalUnit({ id: 'lu' });
    const reg = new DeviceRegistry((id) => Promise.resolve(lu.initiator(id)));
    const grew = await reg.get('pv-grew', 'x');
    grew.keyPaths = ['sdb', 'sdc'];
    const same = await reg.get('pv-same', 'y');
    same.keyPaths = ['sdd', 'sde'];
    const shrunk = await reg.get('pv-shrunk', 'z');
    shrunk.keyPaths = ['sdf', 'sdg'];
    await reg.get('pv-unknown', 'w'); // keyPaths undefined: the reconcile decides
    const now: Record<string, string[]> = {
      x: ['sdb', 'sdc', 'sdh'],
      y: ['sdd', 'sde'],
      z: ['sdf'],
      w: ['sdi', 'sdj'],
    };
    const triggered: string[] = [];
    const watch = new PathWatch({
      intervalMs: 0,
      entries: () => reg.entries(),
      pathsOf: (d) => Promise.resolve(now[d.id.replace(/^.*\//, '')] ?? now[d.id]),
      trigger: (pv) => triggered.push(pv),
      log,
    });
    expect(await watch.round()).toEqual(['pv-grew']);
    expect(triggered).toEqual(['pv-grew']);
  });
});
