import { describe, expect, it } from 'vitest';
import { classifyNvmeStatus, classifyPrOutcome, ERRNO } from '../../../src/pr/koffi/classify.js';

const ctx = { op: 'reserve', device: '/dev/sdx' };
const kind = (r: ReturnType<typeof classifyPrOutcome>) => (r === null || r === 'retry' ? r : r.kind);

describe('classifyPrOutcome', () => {
  it.each([
    ['0 -> success', { ret: 0, errno: 0 }, false, null],
    ['kernel 7.x 0x18 -> conflict', { ret: 0x18, errno: 0 }, false, 'conflict'],
    ['kernel 6.1 raw result 0x118 -> conflict', { ret: 0x118, errno: 0 }, false, 'conflict'],
    ['check condition, first attempt -> retry once', { ret: 2, errno: 0 }, false, 'retry'],
    [
      'ret 2 again (PR_STS_IOERR on 6.12+, bare CHECK CONDITION on 6.1) -> indeterminate',
      { ret: 2, errno: 0 },
      true,
      'indeterminate',
    ],
    [
      '6.1 invalid type 0x402 after retry -> invalid-argument',
      { ret: 0x402, errno: 0 },
      true,
      'invalid-argument',
    ],
    ['PR_STS_PATH_FAILED 0x10000 -> indeterminate', { ret: 0x10000, errno: 0 }, false, 'indeterminate'],
    [
      'PR_STS_RETRY_PATH_FAILURE 0xe0000 -> indeterminate',
      { ret: 0xe0000, errno: 0 },
      false,
      'indeterminate',
    ],
    ['BUSY 0x08 -> not-sent', { ret: 0x08, errno: 0 }, false, 'not-sent'],
    ['ENOTTY -> unsupported', { ret: -1, errno: ERRNO.ENOTTY }, false, 'unsupported'],
    ['EOPNOTSUPP (unknown flag) -> unsupported', { ret: -1, errno: ERRNO.EOPNOTSUPP }, false, 'unsupported'],
    ['EINVAL -> invalid-argument', { ret: -1, errno: ERRNO.EINVAL }, false, 'invalid-argument'],
    ['EBADE -> conflict', { ret: -1, errno: ERRNO.EBADE }, false, 'conflict'],
    ['EAGAIN (no path) -> not-sent', { ret: -1, errno: ERRNO.EAGAIN }, false, 'not-sent'],
    ['ENODEV -> not-sent', { ret: -1, errno: ERRNO.ENODEV }, false, 'not-sent'],
    ['EIO -> indeterminate', { ret: -1, errno: ERRNO.EIO }, false, 'indeterminate'],
    ['ETIMEDOUT -> indeterminate', { ret: -1, errno: ERRNO.ETIMEDOUT }, false, 'indeterminate'],
    ['EACCES -> unsupported (terminal)', { ret: -1, errno: ERRNO.EACCES }, false, 'unsupported'],
  ] as const)('%s', (_name, out, retried, want) => {
    expect(kind(classifyPrOutcome(out, { ...ctx, retried }))).toBe(want);
  });

  it('every error carries op, device and the raw channel', () => {
    const e = classifyPrOutcome({ ret: 0x118, errno: 0 }, ctx);
    expect(e).toMatchObject({ op: 'reserve', device: '/dev/sdx', status: 0x118 });
  });
});

describe('classifyNvmeStatus', () => {
  it.each([
    ['0 -> success', 0, null],
    ['0x83 reservation conflict -> conflict', 0x83, 'conflict'],
    ['0x4083 (DNR) -> conflict', 0x4083, 'conflict'],
    ['0x01 invalid opcode -> unsupported', 0x01, 'unsupported'],
    ['0x02 invalid field -> invalid-argument', 0x02, 'invalid-argument'],
    ['0x06 internal error -> indeterminate', 0x06, 'indeterminate'],
  ] as const)('%s', (_n, ret, want) => {
    const r = classifyNvmeStatus({ ret, errno: 0 }, ctx);
    expect(r === null ? null : r.kind).toBe(want);
  });
});
