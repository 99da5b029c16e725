import { describe, expect, it } from 'vitest';
import { clusterTag, makeKey, allocateSlot, isClusterKey } from '../../../src/fence/keys.js';
import { decideVolume, type FenceInput } from '../../../src/fence/rule.js';

const TAG = clusterTag('kube-system-uid');
const A = makeKey(TAG, 1);
const B = makeKey(TAG, 2);
const C = makeKey(TAG, 3);
const FOREIGN = 0x1234567800000001n;

function input(over: Partial<FenceInput> & { device: FenceInput['device'] }): FenceInput {
  return {
    self: { node: 'b', key: B, legitimate: true, mayRegister: true, inUse: false },
    legitimate: [{ node: 'b', key: B }],
    known: [
      { node: 'a', key: A },
      { node: 'b', key: B },
      { node: 'c', key: C },
    ],
    clusterTag: TAG,
    desiredType: 'write-exclusive-reg-only',
    foreignKeys: 'leave',
    ...over,
  };
}
const dev = (
  keys: bigint[],
  holder: bigint | null,
  type: FenceInput['device']['type'] = holder === null ? null : 'write-exclusive-reg-only',
) => ({ kind: 'scsi' as const, keys, holder, type });

describe('fence rule', () => {
  it('own key not registered, empty device -> register then reserve', () => {
    const p = decideVolume(input({ device: dev([], null) }));
    expect(p.actions).toEqual([{ kind: 'register' }, { kind: 'reserve', type: 'write-exclusive-reg-only' }]);
  });

  it('stale holder -> preempt-and-abort it with our key (takes the reservation)', () => {
    const p = decideVolume(input({ device: dev([A, B], A) }));
    expect(p.role).toBe('actor');
    expect(p.actions).toEqual([
      { kind: 'preempt-abort', victim: A, victimNode: 'a', type: 'write-exclusive-reg-only' },
    ]);
    expect(p.keys).toEqual([
      { key: A, class: 'stale', node: 'a' },
      { key: B, class: 'own', node: 'b' },
    ]);
  });

  it('S1: a legitimate holder is never preempted; the holder acts, we wait', () => {
    const p = decideVolume(
      input({
        legitimate: [
          { node: 'b', key: B },
          { node: 'c', key: C },
        ],
        device: dev([B, C], C),
      }),
    );
    expect(p.role).toBe('waiter');
    expect(p.actions).toEqual([]);
  });

  it('S1: the own key and legitimate keys never appear as victims, whatever else is stale', () => {
    const p = decideVolume(
      input({
        legitimate: [
          { node: 'b', key: B },
          { node: 'c', key: C },
        ],
        device: dev([A, B, C], B),
      }),
    );
    const victims = p.actions.flatMap((a) => (a.kind === 'preempt-abort' ? [a.victim] : []));
    expect(victims).toEqual([A]);
  });

  it('S7: foreign keys are left alone by default, preempted only on opt-in', () => {
    const leave = decideVolume(input({ device: dev([B, FOREIGN], B) }));
    expect(leave.actions).toEqual([]);
    expect(leave.keys.find((k) => k.key === FOREIGN)?.class).toBe('foreign');
    const opt = decideVolume(input({ foreignKeys: 'preempt', device: dev([B, FOREIGN], B) }));
    expect(opt.actions).toEqual([
      { kind: 'preempt-abort', victim: FOREIGN, type: 'write-exclusive-reg-only' },
    ]);
  });

  it('S7: a foreign holder is not preempted; we wait', () => {
    const p = decideVolume(input({ device: dev([B, FOREIGN], FOREIGN) }));
    expect(p.role).toBe('waiter');
    expect(p.actions.some((a) => a.kind === 'preempt-abort')).toBe(false);
  });

  it('S2: a fenced node whose key is gone -> blocked, never register', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: false, inUse: false },
        device: dev([A], A),
      }),
    );
    expect(p.role).toBe('blocked');
    expect(p.actions).toEqual([]);
  });

  it('only one legitimate node acts: with no holder the lowest legitimate key acts, others wait', () => {
    const legit = [
      { node: 'b', key: B },
      { node: 'c', key: C },
    ];
    const pb = decideVolume(input({ legitimate: legit, device: dev([A, B, C], A) }));
    const pc = decideVolume(
      input({
        self: { node: 'c', key: C, legitimate: true, mayRegister: true, inUse: false },
        legitimate: legit,
        device: dev([A, B, C], A),
      }),
    );
    expect(pb.role).toBe('actor');
    expect(pc.role).toBe('waiter');
    expect(pc.actions).toEqual([]);
  });

  it('not legitimate after detach, holder, device unused -> release then unregister', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: false },
        legitimate: [],
        device: dev([B], B),
      }),
    );
    expect(p.actions).toEqual([
      { kind: 'release', type: 'write-exclusive-reg-only' },
      { kind: 'unregister' },
    ]);
  });

  it('not legitimate but device still in use -> wait, nothing released', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: true },
        legitimate: [],
        device: dev([B], B),
      }),
    );
    expect(p.actions).toEqual([]);
  });

  it('A9: NVMe holder with a stale key, no quirk seen -> a single preempt (the spec), no window without a reservation', () => {
    const p = decideVolume(
      input({ device: { kind: 'nvme', keys: [B, A], holder: B, type: 'write-exclusive-reg-only' } }),
    );
    expect(p.actions.map((a) => a.kind)).toEqual(['preempt-abort']);
  });

  it('A9: holder with a stale key on a device seen to keep the victim -> release, preempt, reserve', () => {
    const p = decideVolume(
      input({
        holderPreemptKeepsVictim: true,
        device: { kind: 'nvme', keys: [B, A], holder: B, type: 'write-exclusive-reg-only' },
      }),
    );
    expect(p.actions.map((a) => a.kind)).toEqual(['release', 'preempt-abort', 'reserve']);
  });

  it('this node asked to be fenced, registered, holder -> no command at all (peers fence it and record the proof)', () => {
    const p = decideVolume(
      input({
        self: {
          node: 'b',
          key: B,
          legitimate: false,
          mayRegister: false,
          inUse: false,
          fenceRequested: true,
        },
        legitimate: [{ node: 'a', key: A }],
        device: dev([B, A], B),
      }),
    );
    expect(p.actions).toEqual([]);
    expect(p.role).toBe('blocked');
  });

  it('S2: registered although it may not register (a late REGISTER landed) -> release and unregister, no preempt', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: false, inUse: false },
        device: dev([B, A], B),
      }),
    );
    expect(p.role).toBe('leaver');
    expect(p.actions).toEqual([
      { kind: 'release', type: 'write-exclusive-reg-only' },
      { kind: 'unregister' },
    ]);
  });

  describe('a reservation that keeps a fenced node out never lapses', () => {
    const leaver = { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: false };

    it('the detached holder while a fenced node exists -> holds it (no release, no unregister)', () => {
      const p = decideVolume(
        input({ self: leaver, legitimate: [], holdForFenced: true, device: dev([B], B) }),
      );
      expect(p.role).toBe('handing-over');
      expect(p.actions).toEqual([]);
    });

    it('the detached holder with no fenced node -> releases and unregisters as before', () => {
      const p = decideVolume(input({ self: leaver, legitimate: [], device: dev([B], B) }));
      expect(p.actions).toEqual([
        { kind: 'release', type: 'write-exclusive-reg-only' },
        { kind: 'unregister' },
      ]);
    });

    it('a detached registrant that does not hold it -> unregisters even while a node is fenced', () => {
      const p = decideVolume(
        input({
          self: leaver,
          legitimate: [{ node: 'c', key: C }],
          holdForFenced: true,
          device: dev([B, C], C),
        }),
      );
      expect(p.actions).toEqual([{ kind: 'unregister' }]);
    });

    it('all-registrants: the last registrant holds it; with another registrant it unregisters', () => {
      const t = 'write-exclusive-all-regs' as const;
      const last = decideVolume(
        input({ self: leaver, legitimate: [], holdForFenced: true, device: dev([B], 0n, t) }),
      );
      expect(last.role).toBe('handing-over');
      const notLast = decideVolume(
        input({
          self: leaver,
          legitimate: [{ node: 'c', key: C }],
          holdForFenced: true,
          device: dev([B, C], 0n, t),
        }),
      );
      expect(notLast.actions).toEqual([{ kind: 'unregister' }]);
    });

    it('the actor takes the reservation from a node handing it over at once, even within its grace, as a takeover', () => {
      const p = decideVolume(
        input({
          self: { node: 'c', key: C, legitimate: true, mayRegister: true, inUse: false },
          legitimate: [{ node: 'c', key: C }],
          spare: [B],
          handover: [B],
          device: dev([B], B),
        }),
      );
      expect(p.actions).toEqual([
        { kind: 'register' },
        {
          kind: 'preempt-abort',
          victim: B,
          victimNode: 'b',
          type: 'write-exclusive-reg-only',
          takeover: true,
        },
      ]);
    });

    it('a handover key of a node that is legitimate again is never taken over', () => {
      const p = decideVolume(
        input({
          self: { node: 'c', key: C, legitimate: true, mayRegister: true, inUse: false },
          legitimate: [
            { node: 'b', key: B },
            { node: 'c', key: C },
          ],
          handover: [B],
          device: dev([B, C], B),
        }),
      );
      expect(p.actions).toEqual([]);
    });
  });

  it('A10: a stale key spared (a leaver within its grace) -> not preempted; the others are', () => {
    const p = decideVolume(input({ spare: [A], device: dev([B, A, C], B) }));
    expect(p.actions).toEqual([
      { kind: 'preempt-abort', victim: C, victimNode: 'c', type: 'write-exclusive-reg-only' },
    ]);
  });

  it('A10: a spared stale holder -> nothing preempted, this node waits for it to release', () => {
    const p = decideVolume(input({ spare: [A], device: dev([A, B], A) }));
    expect(p.actions).toEqual([]);
    expect(p.role).toBe('waiter');
  });

  it('SCSI holder with a stale non-holder key -> a single preempt-and-abort', () => {
    const p = decideVolume(input({ device: dev([B, A], B) }));
    expect(p.actions.map((a) => a.kind)).toEqual(['preempt-abort']);
  });
});

describe('fence rule: observer (a node not attached, for a volume with no legitimate node)', () => {
  const observer = (over: Partial<FenceInput> & { device: FenceInput['device'] }) =>
    input({
      self: { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: false },
      legitimate: [],
      observe: [A],
      ...over,
    });

  it('the only attachment is a node asked to be fenced, holding the reservation -> register, then preempt-and-abort its key (taking the reservation)', () => {
    const p = decideVolume(observer({ device: dev([A], A) }));
    expect({ role: p.role, actions: p.actions }).toEqual({
      role: 'actor',
      actions: [
        { kind: 'register' },
        { kind: 'preempt-abort', victim: A, victimNode: 'a', type: 'write-exclusive-reg-only' },
      ],
    });
  });

  it('no reservation on the device -> the fenced key removed, then the observer reserves (else every initiator may write)', () => {
    const p = decideVolume(observer({ device: dev([A, B], null) }));
    expect(p.actions).toEqual([
      { kind: 'preempt-abort', victim: A, victimNode: 'a', type: 'write-exclusive-reg-only' },
      { kind: 'reserve', type: 'write-exclusive-reg-only' },
    ]);
  });

  it('a legitimate node exists -> the observer does nothing (that node fences)', () => {
    const p = decideVolume(observer({ legitimate: [{ node: 'c', key: C }], device: dev([A, C], A) }));
    expect({ role: p.role, actions: p.actions }).toEqual({ role: 'idle', actions: [] });
  });

  it('a stale key of a node NOT asked to be fenced (a leaver) -> left alone by the observer', () => {
    const p = decideVolume(observer({ observe: [], device: dev([C], C) }));
    expect(p.actions).toEqual([]);
  });

  it('only the fenced keys go: another stale key on the device stays', () => {
    const p = decideVolume(observer({ device: dev([A, B, C], A) }));
    expect(p.actions).toEqual([
      { kind: 'preempt-abort', victim: A, victimNode: 'a', type: 'write-exclusive-reg-only' },
    ]);
  });

  it('S2: an observer that may not register (itself fenced or blocked) -> nothing', () => {
    const p = decideVolume(
      observer({
        self: { node: 'b', key: B, legitimate: false, mayRegister: false, inUse: false },
        device: dev([A], A),
      }),
    );
    expect(p.actions).toEqual([]);
  });

  it('right after its fence (the fenced node still attached, its key gone) -> handing-over: the reservation is held, not released', () => {
    const p = decideVolume(observer({ device: dev([B], B) }));
    expect({ role: p.role, actions: p.actions }).toEqual({ role: 'handing-over', actions: [] });
  });

  it('after its fence, holding the reservation while the fenced node may still write -> handing-over (held, not released)', () => {
    const p = decideVolume(observer({ observe: [], holdForFenced: true, device: dev([B], B) }));
    expect({ role: p.role, actions: p.actions }).toEqual({ role: 'handing-over', actions: [] });
  });
});

describe('keys (S6)', () => {
  it('cluster keys carry the tag; other tags are foreign; never 0', () => {
    expect(isClusterKey(A, TAG)).toBe(true);
    expect(isClusterKey(FOREIGN, TAG)).toBe(false);
    expect(isClusterKey(0n, TAG)).toBe(false);
    expect(makeKey(TAG, allocateSlot('n', 'u', new Map()))).not.toBe(0n);
  });

  it('same incarnation -> same slot (stable across restarts); new UID -> new slot', () => {
    const first = allocateSlot('node-a', 'uid-1', new Map());
    const taken = new Map([[first, { node: 'node-a', nodeUid: 'uid-1' }]]);
    expect(allocateSlot('node-a', 'uid-1', taken)).toBe(first);
    expect(allocateSlot('node-a', 'uid-2', taken)).not.toBe(first);
  });

  it('a slot taken by another node is never handed out again (unique)', () => {
    const want = allocateSlot('node-b', 'uid', new Map());
    const taken = new Map([[want, { node: 'node-x', nodeUid: 'x' }]]);
    const got = allocateSlot('node-b', 'uid', taken);
    expect(got).not.toBe(want);
    expect(got).toBeGreaterThan(0);
  });
});

describe('fence rule: paths added under a dm-multipath device (newPaths)', () => {
  const wear = (keys: bigint[]) => dev(keys, 0n, 'write-exclusive-all-regs');

  it('own key registered, legitimate, may register, new paths -> register again (reregister) and nothing else', () => {
    const p = decideVolume(input({ device: wear([B, B]), newPaths: ['sdd'] }));
    expect({ role: p.role, actions: p.actions }).toEqual({
      role: 'actor',
      actions: [{ kind: 'register', reregister: ['sdd'] }],
    });
  });

  it('no new paths -> no register of the own key', () => {
    expect(decideVolume(input({ device: wear([B, B]) })).actions).toEqual([]);
    expect(decideVolume(input({ device: wear([B, B]), newPaths: [] })).actions).toEqual([]);
  });

  it('S2: own key gone and the node may not register -> blocked, no register of any kind', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: false, inUse: false },
        device: wear([C]),
        legitimate: [
          { node: 'b', key: B },
          { node: 'c', key: C },
        ],
        newPaths: ['sdd'],
      }),
    );
    expect({ role: p.role, actions: p.actions }).toEqual({ role: 'blocked', actions: [] });
  });

  it('own key still there but the node may not register -> it leaves (S2), no re-registration', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: false, inUse: false },
        device: wear([B]),
        newPaths: ['sdd'],
      }),
    );
    expect(p.actions.some((a) => a.kind === 'register')).toBe(false);
  });

  it('asked to be fenced, or not legitimate -> no re-registration', () => {
    const requested = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: true, inUse: false, fenceRequested: true },
        device: wear([B]),
        newPaths: ['sdd'],
      }),
    );
    const detached = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: false },
        legitimate: [],
        device: wear([B]),
        newPaths: ['sdd'],
      }),
    );
    expect(requested.actions).toEqual([]);
    expect(detached.actions.some((a) => a.kind === 'register')).toBe(false);
  });

  it("NVMe (the registration is the host's, on every controller of it) -> no re-registration", () => {
    const p = decideVolume(input({ device: { ...wear([B]), kind: 'nvme' }, newPaths: ['nvme1n1'] }));
    expect(p.actions).toEqual([]);
  });

  it('another legitimate node acts -> this node still registers again through its new paths', () => {
    const p = decideVolume(
      input({
        legitimate: [
          { node: 'a', key: A },
          { node: 'b', key: B },
        ],
        device: wear([A, B]),
        newPaths: ['sdd'],
      }),
    );
    expect(p.actions).toEqual([{ kind: 'register', reregister: ['sdd'] }]);
  });
});

describe('fence rule: a leaver on a dm-multipath device with paths not known to carry its key', () => {
  const wear = (keys: bigint[]) => dev(keys, 0n, 'write-exclusive-all-regs');
  const detachedB = { node: 'b', key: B, legitimate: false, mayRegister: true, inUse: false };

  it('detached, SCSI, new paths -> unregister sent so that it leaves the uncovered paths alone (uncovered), nothing registered', () => {
    const p = decideVolume(
      input({ self: detachedB, legitimate: [], device: wear([B, B]), newPaths: ['sdd'] }),
    );
    expect({ role: p.role, actions: p.actions }).toEqual({
      role: 'leaver',
      actions: [{ kind: 'unregister', uncovered: ['sdd'] }],
    });
  });

  it('detached holder of a write-exclusive reservation, new paths -> release, then the unregister that leaves the uncovered paths alone', () => {
    const p = decideVolume(
      input({
        self: detachedB,
        legitimate: [],
        device: dev([B, A], B, 'write-exclusive'),
        newPaths: ['sdd'],
      }),
    );
    expect(p.actions).toEqual([
      { kind: 'release', type: 'write-exclusive' },
      { kind: 'unregister', uncovered: ['sdd'] },
    ]);
  });

  it('S2: own key still there, may not register, new paths -> the same unregister, never a register', () => {
    const p = decideVolume(
      input({
        self: { node: 'b', key: B, legitimate: true, mayRegister: false, inUse: false },
        device: wear([B]),
        newPaths: ['sdd'],
      }),
    );
    expect({ role: p.role, actions: p.actions }).toEqual({
      role: 'leaver',
      actions: [{ kind: 'unregister', uncovered: ['sdd'] }],
    });
  });

  it('every path known to carry the key (no new paths) -> a plain unregister, as before', () => {
    const p = decideVolume(input({ self: detachedB, legitimate: [], device: wear([B, B]) }));
    expect(p.actions).toEqual([{ kind: 'unregister' }]);
  });

  it("NVMe (the registration is the host's) -> a plain unregister even with new paths", () => {
    const p = decideVolume(
      input({
        self: detachedB,
        legitimate: [],
        device: { ...wear([B]), kind: 'nvme' },
        newPaths: ['nvme1n1'],
      }),
    );
    expect(p.actions).toEqual([{ kind: 'unregister' }]);
  });
});
