/**
 * The kernel ABI prfence uses, as plain numbers: ioctl request codes and struct layouts
 * (x86-64 / aarch64 LP64) of include/uapi/linux/pr.h, include/scsi/sg.h and
 * include/uapi/linux/nvme_ioctl.h. Verified against the real headers by
 * test/unit/pr/koffi-abi.test.ts (compiles test/kernel/c/abi.c with gcc).
 */

const IOC_WRITE = 1;
const IOC_READ = 2;
/** _IOC(dir, type, nr, size) from include/uapi/asm-generic/ioctl.h. */
export function ioc(dir: number, type: string, nr: number, size: number): number {
  return ((dir << 30) >>> 0) + size * 65536 + type.charCodeAt(0) * 256 + nr;
}

/** struct sizes and field offsets (bytes). */
export const PR_REGISTRATION = { size: 24, oldKey: 0, newKey: 8, flags: 16 } as const;
export const PR_RESERVATION = { size: 16, key: 0, type: 8, flags: 12 } as const;
export const PR_PREEMPT = { size: 24, oldKey: 0, newKey: 8, type: 16, flags: 20 } as const;
export const PR_CLEAR = { size: 16, key: 0, flags: 8 } as const;
export const PR_READ_KEYS = { size: 16, generation: 0, numKeys: 4, keysPtr: 8 } as const;
export const PR_READ_RESERVATION = { size: 16, key: 0, generation: 8, type: 12 } as const;

export const IOC_PR_REGISTER = ioc(IOC_WRITE, 'p', 200, PR_REGISTRATION.size);
export const IOC_PR_RESERVE = ioc(IOC_WRITE, 'p', 201, PR_RESERVATION.size);
export const IOC_PR_RELEASE = ioc(IOC_WRITE, 'p', 202, PR_RESERVATION.size);
export const IOC_PR_PREEMPT = ioc(IOC_WRITE, 'p', 203, PR_PREEMPT.size);
export const IOC_PR_PREEMPT_ABORT = ioc(IOC_WRITE, 'p', 204, PR_PREEMPT.size);
export const IOC_PR_CLEAR = ioc(IOC_WRITE, 'p', 205, PR_CLEAR.size);
/** Linux >= 6.19 (kernel-lab: present on 7.x, ENOTTY on 6.1). */
export const IOC_PR_READ_KEYS = ioc(IOC_READ | IOC_WRITE, 'p', 206, PR_READ_KEYS.size);
export const IOC_PR_READ_RESERVATION = ioc(IOC_READ, 'p', 207, PR_READ_RESERVATION.size);
export const PR_FL_IGNORE_KEY = 1;

/** struct sg_io_hdr (include/scsi/sg.h), LP64. */
export const SG_IO_HDR = {
  size: 88,
  interfaceId: 0,
  dxferDirection: 4,
  cmdLen: 8,
  mxSbLen: 9,
  iovecCount: 10,
  dxferLen: 12,
  dxferp: 16,
  cmdp: 24,
  sbp: 32,
  timeout: 40,
  flags: 44,
  packId: 48,
  usrPtr: 56,
  status: 64,
  maskedStatus: 65,
  msgStatus: 66,
  sbLenWr: 67,
  hostStatus: 68,
  driverStatus: 70,
  resid: 72,
  duration: 76,
  info: 80,
} as const;
export const SG_IO = 0x2285;
export const SG_DXFER_NONE = -1;
export const SG_DXFER_FROM_DEV = -3;
/**
 * SG_SCSI_RESET (sg and sd alike: scsi_ioctl_reset) and its `int` argument's values; TARGET
 * and NO_ESCALATE are in the kernel's include/scsi/sg.h only (not in glibc's copy).
 */
export const SG_SCSI_RESET = 0x2284;
export const SG_SCSI_RESET_DEVICE = 1;
export const SG_SCSI_RESET_BUS = 2;
export const SG_SCSI_RESET_HOST = 3;
export const SG_SCSI_RESET_TARGET = 4;
export const SG_SCSI_RESET_NO_ESCALATE = 0x100;

/** struct nvme_passthru_cmd (include/uapi/linux/nvme_ioctl.h). */
export const NVME_PASSTHRU_CMD = {
  size: 72,
  opcode: 0,
  flags: 1,
  nsid: 4,
  cdw2: 8,
  cdw3: 12,
  metadata: 16,
  addr: 24,
  metadataLen: 32,
  dataLen: 36,
  cdw10: 40,
  cdw11: 44,
  cdw12: 48,
  cdw13: 52,
  cdw14: 56,
  cdw15: 60,
  timeoutMs: 64,
  result: 68,
} as const;
export const NVME_IOCTL_ID = ioc(0, 'N', 0x40, 0);
/** Admin passthrough (struct nvme_admin_cmd = struct nvme_passthru_cmd); allowed on a namespace's block device (drivers/nvme/host/ioctl.c is_ctrl_ioctl). */
export const NVME_IOCTL_ADMIN_CMD = ioc(IOC_READ | IOC_WRITE, 'N', 0x41, NVME_PASSTHRU_CMD.size);
export const NVME_IOCTL_IO_CMD = ioc(IOC_READ | IOC_WRITE, 'N', 0x43, NVME_PASSTHRU_CMD.size);

/** open(2) flags (asm-generic/fcntl.h, x86-64). */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_DIRECT = 0o40000;
export const O_CLOEXEC = 0o2000000;
