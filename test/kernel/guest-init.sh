#!/bin/busybox sh
# /init of the QEMU guest (busybox initramfs built by test/kernel/run.mjs).
# Loads the modules, builds kernel PR targets through configfs with three initiators on
# one logical unit each, mounts the host's root read-only over 9p, and runs the kernel
# vitest project of the repo from there (chroot), then powers off. Output goes to the
# serial console, which the host parses (lines starting with PRFENCE-); the vitest report
# goes to the host through a second, writable 9p share.
/bin/busybox --install -s /bin
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev; mount -t tmpfs t /tmp
. /prfence.conf
say() { echo "PRFENCE-LOG $*"; }
while read -r m params; do
  [ -n "$m" ] || continue
  # shellcheck disable=SC2086
  insmod "/mods/$m.ko" $params 2>/dev/null || say "insmod $m failed"
done </mods/order
mount -t configfs none /sys/kernel/config 2>/dev/null
# LIO keeps APTPL metadata in /var/target/pr; without it every REGISTER (Linux always sets
# APTPL) fails. Created in both roots: the initramfs and the chroot the tests run in.
mkdir -p /var/target/pr
T=/sys/kernel/config/target
topologies=""
add_topology() { # name kind limitations dev1 dev2 dev3
  name=$1 kind=$2 lim=$3; shift 3
  devs=""; for d in "$@"; do devs="$devs${devs:+,}\"$d\""; done
  lims=""; for l in $lim; do lims="$lims${lims:+,}\"$l\""; done
  topologies="$topologies${topologies:+,}{\"name\":\"$name\",\"kind\":\"$kind\",\"devices\":[$devs],\"limitations\":[$lims]}"
}
wait_new() { # glob count -> waits until that many block devices match
  i=0; while [ "$(ls -d $1 2>/dev/null | wc -l)" -lt "$2" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}

# --- LIO over tcm_loop: one fileio LU, three I_T nexuses -> three /dev/sdX ---------------
if [ -d $T ] && [ -e /mods/tcm_loop.ko ]; then
  dd if=/dev/zero of=/tmp/lun0.img bs=1M count=32 2>/dev/null
  mkdir -p $T/core/fileio_0/lun0
  echo "fd_dev_name=/tmp/lun0.img,fd_dev_size=33554432" >$T/core/fileio_0/lun0/control
  echo 1 >$T/core/fileio_0/lun0/enable
  tcm=""
  for i in 1 2 3; do
    W=naa.500140500000000$i
    mkdir -p $T/loopback/$W/tpgt_1/lun/lun_0
    echo naa.50014050000000f$i >$T/loopback/$W/tpgt_1/nexus
    ln -s $T/core/fileio_0/lun0 $T/loopback/$W/tpgt_1/lun/lun_0/lun0
    wait_new "/sys/block/sd*" "$i"
    # the device that appeared for this nexus: the one not seen before
    for d in $(ls /sys/block | grep '^sd'); do case " $tcm " in *" /dev/$d "*) ;; *) tcm="$tcm /dev/$d" ;; esac; done
  done
  # shellcheck disable=SC2086
  add_topology lio-tcm_loop scsi "preempt-abort-hangs" $tcm
fi

# --- nvmet over the loop transport (needs resv_enable: kernel >= 6.13) ------------------
N=/sys/kernel/config/nvmet
if [ "$MODE" != probe ] && [ -d $N ]; then
  dd if=/dev/zero of=/tmp/ns1.img bs=1M count=32 2>/dev/null
  mkdir $N/subsystems/prfence; echo 1 >$N/subsystems/prfence/attr_allow_any_host
  mkdir $N/subsystems/prfence/namespaces/1
  echo /tmp/ns1.img >$N/subsystems/prfence/namespaces/1/device_path
  # An NGUID as arrays report one (nvmet leaves it zero otherwise); device resolution reads it.
  echo 6f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8 >$N/subsystems/prfence/namespaces/1/device_nguid 2>/dev/null || say "no device_nguid"
  if [ -e $N/subsystems/prfence/namespaces/1/resv_enable ]; then
    echo 1 >$N/subsystems/prfence/namespaces/1/resv_enable
    echo 1 >$N/subsystems/prfence/namespaces/1/enable
    mkdir $N/ports/1; echo loop >$N/ports/1/addr_trtype
    ln -s $N/subsystems/prfence $N/ports/1/subsystems/prfence
    nv=""
    for i in 1 2 3; do
      echo "transport=loop,nqn=prfence,hostnqn=nqn.2026-11.io.prfence:host-$i,hostid=$i$i$i$i$i$i$i$i-0000-4000-8000-00000000000$i" >/dev/nvme-fabrics
      wait_new "/sys/block/nvme*n1" "$i"
      for d in $(ls /sys/block | grep '^nvme'); do case " $nv " in *" /dev/$d "*) ;; *) nv="$nv /dev/$d" ;; esac; done
    done
    # shellcheck disable=SC2086
    add_topology nvmet-loop nvme "" $nv
  else
    say "nvmet has no resv_enable on $(uname -r): NVMe reservations need kernel >= 6.13"
  fi
fi

# --- a block device without PR support (brd ram disk) -----------------------------------
[ -e /dev/ram0 ] && NO_PR=/dev/ram0

echo "PRFENCE-KERNEL $(uname -r)"
echo "PRFENCE-TOPOLOGIES [$topologies]"

ip link set lo up # the e2e test runs kube-apiserver and etcd on loopback
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host || { echo "PRFENCE-RC 97"; poweroff -f; }
mount -t proc p /host/proc; mount -t sysfs s /host/sys; mount -t devtmpfs d /host/dev
mount -t tmpfs t /host/run; mkdir -p /host/run/home /host/run/tmp /host/run/out
# The host's writable share for the vitest report (the console can garble long output).
mount -t 9p -o trans=virtio,version=9p2000.L out /host/run/out || say "no out share: no test report"
# LIO writes APTPL metadata under /var/target/pr, resolved in the chroot of the caller.
mount -t tmpfs t /host/var/target 2>/dev/null && mkdir -p /host/var/target/pr
if [ "$MODE" = bench ]; then
  chroot /host /usr/bin/env -i HOME=/run/home TMPDIR=/run/tmp PATH="$REPO/node_modules/.bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    PRFENCE_KERNEL_TOPOLOGIES="[$topologies]" PRFENCE_BENCH_C_LOOP="$C_LOOP" \
    /bin/sh -c "cd '$REPO' && node dist/bench/device/device-bench.js"
  echo "PRFENCE-RC $?"
  poweroff -f
fi
chroot /host /usr/bin/env -i HOME=/run/home TMPDIR=/run/tmp PATH="$REPO/node_modules/.bin:/usr/local/bin:/usr/bin:/bin" \
  PRFENCE_KERNEL_TOPOLOGIES="[$topologies]" PRFENCE_NO_PR_DEVICE="$NO_PR" PRFENCE_LIMITATION_PROBE="$PROBE" PRFENCE_BIN_DIR="$BIN_DIR" CI=true \
  /bin/sh -c "cd '$REPO' && node node_modules/vitest/vitest.mjs run --configLoader runner --no-cache --no-fsModuleCache --project ${PROJECT:-kernel} $VITEST_ARGS --reporter=verbose --reporter=json --outputFile=/run/out/vitest.json"
rc=$?
sync
echo "PRFENCE-RC $rc"
poweroff -f
