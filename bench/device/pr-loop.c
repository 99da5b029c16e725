/* C baseline for the device benchmark: the same pr.h ioctls prfence issues, in a tight
 * loop, no FFI. Usage: pr-loop DEV N -> prints "read_keys_us register_cycle_us". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/pr.h>

#ifndef IOC_PR_READ_KEYS
struct pr_read_keys { __u32 generation; __u32 num_keys; __u64 keys_ptr; };
#define IOC_PR_READ_KEYS _IOWR('p', 206, struct pr_read_keys)
#endif

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int fd = open(argv[1], O_RDWR | O_NONBLOCK);
  int n = atoi(argv[2]);
  if (fd < 0) { perror("open"); return 1; }
  unsigned long long keys[32];
  struct pr_read_keys rk = {0, 32, (unsigned long long)(unsigned long)keys};
  double t0 = now_us();
  int okr = 1;
  for (int i = 0; i < n; i++) { rk.num_keys = 32; if (ioctl(fd, IOC_PR_READ_KEYS, &rk) != 0) okr = 0; }
  double t1 = now_us();
  struct pr_registration reg = {0, 0x0bec000000000001ULL, 0, 0}, unreg = {0x0bec000000000001ULL, 0, 0, 0};
  for (int i = 0; i < n; i++) { ioctl(fd, IOC_PR_REGISTER, &reg); ioctl(fd, IOC_PR_REGISTER, &unreg); }
  double t2 = now_us();
  printf("%.1f %.1f %d\n", okr ? (t1 - t0) / n : -1.0, (t2 - t1) / n, okr);
  return 0;
}
