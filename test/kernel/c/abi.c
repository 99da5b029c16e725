/* Prints the kernel ABI facts prfence's src/pr/koffi/abi.ts hard-codes, as JSON,
 * compiled against the newest UAPI headers by test/unit/pr/koffi-abi.test.ts. */
#include <stddef.h>
#include <stdio.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/pr.h>
#include <linux/nvme_ioctl.h>
#include <scsi/sg.h>

#define F(s, f) printf("\"%s.%s\": %zu,\n", #s, #f, offsetof(struct s, f))
#define S(s) printf("\"%s.size\": %zu,\n", #s, sizeof(struct s))
#define N(x) printf("\"%s\": %lu,\n", #x, (unsigned long)(x))

int main(void) {
  printf("{\n");
  S(pr_registration); F(pr_registration, old_key); F(pr_registration, new_key); F(pr_registration, flags);
  S(pr_reservation); F(pr_reservation, key); F(pr_reservation, type); F(pr_reservation, flags);
  S(pr_preempt); F(pr_preempt, old_key); F(pr_preempt, new_key); F(pr_preempt, type); F(pr_preempt, flags);
  S(pr_clear); F(pr_clear, key); F(pr_clear, flags);
  S(pr_read_keys); F(pr_read_keys, generation); F(pr_read_keys, num_keys); F(pr_read_keys, keys_ptr);
  S(pr_read_reservation); F(pr_read_reservation, key); F(pr_read_reservation, generation); F(pr_read_reservation, type);
  S(sg_io_hdr); F(sg_io_hdr, interface_id); F(sg_io_hdr, dxfer_direction); F(sg_io_hdr, cmd_len);
  F(sg_io_hdr, mx_sb_len); F(sg_io_hdr, dxfer_len); F(sg_io_hdr, dxferp); F(sg_io_hdr, cmdp); F(sg_io_hdr, sbp);
  F(sg_io_hdr, timeout); F(sg_io_hdr, status); F(sg_io_hdr, sb_len_wr); F(sg_io_hdr, host_status); F(sg_io_hdr, resid);
  S(nvme_passthru_cmd); F(nvme_passthru_cmd, opcode); F(nvme_passthru_cmd, nsid); F(nvme_passthru_cmd, addr);
  F(nvme_passthru_cmd, data_len); F(nvme_passthru_cmd, cdw10); F(nvme_passthru_cmd, cdw11); F(nvme_passthru_cmd, timeout_ms);
  N(IOC_PR_REGISTER); N(IOC_PR_RESERVE); N(IOC_PR_RELEASE); N(IOC_PR_PREEMPT); N(IOC_PR_PREEMPT_ABORT);
  N(IOC_PR_CLEAR); N(IOC_PR_READ_KEYS); N(IOC_PR_READ_RESERVATION); N(PR_FL_IGNORE_KEY);
  N(SG_IO); N(SG_SCSI_RESET); N(SG_SCSI_RESET_DEVICE); N(SG_SCSI_RESET_BUS); N(SG_SCSI_RESET_HOST);
  N(NVME_IOCTL_ID); N(NVME_IOCTL_IO_CMD); N(NVME_IOCTL_ADMIN_CMD);
  N(PR_WRITE_EXCLUSIVE); N(PR_EXCLUSIVE_ACCESS); N(PR_WRITE_EXCLUSIVE_REG_ONLY);
  N(PR_EXCLUSIVE_ACCESS_REG_ONLY); N(PR_WRITE_EXCLUSIVE_ALL_REGS); N(PR_EXCLUSIVE_ACCESS_ALL_REGS);
  N(O_RDWR); N(O_NONBLOCK); N(O_DIRECT); N(O_CLOEXEC);
  printf("\"end\": 0\n}\n");
  return 0;
}
