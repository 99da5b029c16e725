/**
 * The ioctl numbers and struct layouts in src/pr/koffi/abi.ts equal what gcc computes
 * from the kernel's own UAPI headers (Debian sid's linux-libc-dev, fetched by
 * test/kernel/fetch-headers.sh, which is newer than the machine's and has the read ioctls).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as abi from '../../../src/pr/koffi/abi.js';
import { PR_TYPE_CODE } from '../../../src/pr/reservation-type.js';

const headers = join(
  process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'),
  'prfence',
  'headers',
  'sid',
  'usr',
  'include',
);

describe('kernel ABI (gcc against the UAPI headers)', () => {
  let c: Record<string, number>;
  beforeAll(() => {
    if (!existsSync(join(headers, 'linux', 'pr.h'))) {
      execFileSync('bash', ['test/kernel/fetch-headers.sh'], { stdio: 'inherit' });
    }
    const out = join(mkdtempSync(join(tmpdir(), 'prfence-abi-')), 'abi');
    // The new UAPI dir first, so its linux/pr.h wins over /usr/include's 6.1-era copy.
    execFileSync('gcc', [
      '-D_GNU_SOURCE',
      '-idirafter',
      '/usr/include',
      '-I',
      headers,
      '-o',
      out,
      'test/kernel/c/abi.c',
    ]);
    c = JSON.parse(execFileSync(out, { encoding: 'utf8' })) as Record<string, number>;
  });

  it('pr.h ioctl request numbers -> equal', () => {
    expect({
      reg: abi.IOC_PR_REGISTER,
      res: abi.IOC_PR_RESERVE,
      rel: abi.IOC_PR_RELEASE,
      pre: abi.IOC_PR_PREEMPT,
      abort: abi.IOC_PR_PREEMPT_ABORT,
      clear: abi.IOC_PR_CLEAR,
      rk: abi.IOC_PR_READ_KEYS,
      rr: abi.IOC_PR_READ_RESERVATION,
      ign: abi.PR_FL_IGNORE_KEY,
    }).toEqual({
      reg: c.IOC_PR_REGISTER,
      res: c.IOC_PR_RESERVE,
      rel: c.IOC_PR_RELEASE,
      pre: c.IOC_PR_PREEMPT,
      abort: c.IOC_PR_PREEMPT_ABORT,
      clear: c.IOC_PR_CLEAR,
      rk: c.IOC_PR_READ_KEYS,
      rr: c.IOC_PR_READ_RESERVATION,
      ign: c.PR_FL_IGNORE_KEY,
    });
  });

  it('pr.h struct layouts -> equal', () => {
    expect(abi.PR_REGISTRATION).toEqual({
      size: c['pr_registration.size'],
      oldKey: c['pr_registration.old_key'],
      newKey: c['pr_registration.new_key'],
      flags: c['pr_registration.flags'],
    });
    expect(abi.PR_RESERVATION).toEqual({
      size: c['pr_reservation.size'],
      key: c['pr_reservation.key'],
      type: c['pr_reservation.type'],
      flags: c['pr_reservation.flags'],
    });
    expect(abi.PR_PREEMPT).toEqual({
      size: c['pr_preempt.size'],
      oldKey: c['pr_preempt.old_key'],
      newKey: c['pr_preempt.new_key'],
      type: c['pr_preempt.type'],
      flags: c['pr_preempt.flags'],
    });
    expect(abi.PR_CLEAR).toEqual({
      size: c['pr_clear.size'],
      key: c['pr_clear.key'],
      flags: c['pr_clear.flags'],
    });
    expect(abi.PR_READ_KEYS).toEqual({
      size: c['pr_read_keys.size'],
      generation: c['pr_read_keys.generation'],
      numKeys: c['pr_read_keys.num_keys'],
      keysPtr: c['pr_read_keys.keys_ptr'],
    });
    expect(abi.PR_READ_RESERVATION).toEqual({
      size: c['pr_read_reservation.size'],
      key: c['pr_read_reservation.key'],
      generation: c['pr_read_reservation.generation'],
      type: c['pr_read_reservation.type'],
    });
  });

  it('enum pr_type -> the codes prfence sends', () => {
    expect(PR_TYPE_CODE).toEqual({
      'write-exclusive': c.PR_WRITE_EXCLUSIVE,
      'exclusive-access': c.PR_EXCLUSIVE_ACCESS,
      'write-exclusive-reg-only': c.PR_WRITE_EXCLUSIVE_REG_ONLY,
      'exclusive-access-reg-only': c.PR_EXCLUSIVE_ACCESS_REG_ONLY,
      'write-exclusive-all-regs': c.PR_WRITE_EXCLUSIVE_ALL_REGS,
      'exclusive-access-all-regs': c.PR_EXCLUSIVE_ACCESS_ALL_REGS,
    });
  });

  it('sg_io_hdr and nvme_passthru_cmd layouts, SG_IO and NVMe ioctl numbers -> equal', () => {
    const h = abi.SG_IO_HDR;
    expect([
      h.size,
      h.interfaceId,
      h.dxferDirection,
      h.cmdLen,
      h.mxSbLen,
      h.dxferLen,
      h.dxferp,
      h.cmdp,
      h.sbp,
    ]).toEqual([
      c['sg_io_hdr.size'],
      c['sg_io_hdr.interface_id'],
      c['sg_io_hdr.dxfer_direction'],
      c['sg_io_hdr.cmd_len'],
      c['sg_io_hdr.mx_sb_len'],
      c['sg_io_hdr.dxfer_len'],
      c['sg_io_hdr.dxferp'],
      c['sg_io_hdr.cmdp'],
      c['sg_io_hdr.sbp'],
    ]);
    expect([h.timeout, h.status, h.sbLenWr, h.hostStatus, h.resid]).toEqual([
      c['sg_io_hdr.timeout'],
      c['sg_io_hdr.status'],
      c['sg_io_hdr.sb_len_wr'],
      c['sg_io_hdr.host_status'],
      c['sg_io_hdr.resid'],
    ]);
    const n = abi.NVME_PASSTHRU_CMD;
    expect([n.size, n.opcode, n.nsid, n.addr, n.dataLen, n.cdw10, n.cdw11, n.timeoutMs]).toEqual([
      c['nvme_passthru_cmd.size'],
      c['nvme_passthru_cmd.opcode'],
      c['nvme_passthru_cmd.nsid'],
      c['nvme_passthru_cmd.addr'],
      c['nvme_passthru_cmd.data_len'],
      c['nvme_passthru_cmd.cdw10'],
      c['nvme_passthru_cmd.cdw11'],
      c['nvme_passthru_cmd.timeout_ms'],
    ]);
    expect([abi.SG_IO, abi.NVME_IOCTL_ID, abi.NVME_IOCTL_IO_CMD, abi.NVME_IOCTL_ADMIN_CMD]).toEqual([
      c.SG_IO,
      c.NVME_IOCTL_ID,
      c.NVME_IOCTL_IO_CMD,
      c.NVME_IOCTL_ADMIN_CMD,
    ]);
    expect([
      abi.SG_SCSI_RESET,
      abi.SG_SCSI_RESET_DEVICE,
      abi.SG_SCSI_RESET_BUS,
      abi.SG_SCSI_RESET_HOST,
    ]).toEqual([c.SG_SCSI_RESET, c.SG_SCSI_RESET_DEVICE, c.SG_SCSI_RESET_BUS, c.SG_SCSI_RESET_HOST]);
    // glibc's scsi/sg.h stops at SG_SCSI_RESET_HOST; the kernel's include/scsi/sg.h (not
    // UAPI) adds these two, checked here against its text.
    expect([abi.SG_SCSI_RESET_TARGET, abi.SG_SCSI_RESET_NO_ESCALATE]).toEqual([4, 0x100]);
    expect([abi.O_RDWR, abi.O_NONBLOCK, abi.O_DIRECT, abi.O_CLOEXEC]).toEqual([
      c.O_RDWR,
      c.O_NONBLOCK,
      c.O_DIRECT,
      c.O_CLOEXEC,
    ]);
  });
});
