#!/bin/busybox sh
# /init of the QEMU guest (busybox initramfs built by test/kernel/run.mjs).
# Loads the modules, builds kernel PR targets through configfs with three initiators on
# one logical unit each (LIO over iSCSI on the guest's loopback and nvmet over loop; LIO
# over tcm_loop in the PREEMPT AND ABORT probe guest), and in the suite guest a wide set of
# WIDE more initiators on a second logical unit of each (iSCSI and nvmet), mounts the host's root read-only over 9p, and runs the kernel vitest
# project of the repo from there (chroot), then powers off. Output goes to the
# serial console, which the host parses (lines starting with PRFENCE-); the vitest report
# goes to the host through a second, writable 9p share.
/bin/busybox --install -s /bin
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev; mount -t tmpfs t /tmp
. /prfence.conf
say() { echo "PRFENCE-LOG $*"; }
# Shortly before the host's time limit: what is stuck, and the kernel log (quiet otherwise).
if [ -n "$WATCHDOG_S" ]; then
  (
    sleep "$WATCHDOG_S"
    say "watchdog: still running after $WATCHDOG_S s; blocked tasks and the kernel log follow"
    echo w >/proc/sysrq-trigger
    dmesg | tail -n 250 | sed 's/^/PRFENCE-DMESG /'
    [ -f /tmp/iscsid.log ] && tail -n 40 /tmp/iscsid.log | sed 's/^/PRFENCE-LOG iscsid: /'
  ) &
fi
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
add_topology() { # name kind limitations dev1 dev2 dev3 (and $wide: the wide set's devices)
  name=$1 kind=$2 lim=$3; shift 3
  devs=""; for d in "$@"; do devs="$devs${devs:+,}\"$d\""; done
  lims=""; for l in $lim; do lims="$lims${lims:+,}\"$l\""; done
  wd=""; for d in $wide; do wd="$wd${wd:+,}\"$d\""; done
  topologies="$topologies${topologies:+,}{\"name\":\"$name\",\"kind\":\"$kind\",\"devices\":[$devs],\"limitations\":[$lims]${wd:+,\"wide\":[$wd]}}"
  wide=""
}
wait_new() { # glob count [tenths] -> waits until that many block devices match (10 s unless told)
  i=0; while [ "$(ls -d $1 2>/dev/null | wc -l)" -lt "$2" ] && [ $i -lt "${3:-100}" ]; do sleep 0.1; i=$((i + 1)); done
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# The wide sets: WIDE (run.mjs: 34 in the suite guest, 0 elsewhere) more I_T nexuses to a
# second LU of each target, for the contract scenario of more than 32 registrations
# (test/contract/suite.ts); the three-initiator topologies stay as they are.
WIDE=${WIDE:-0}
wide="" nvmet_devs="" nv_t0=""

# --- LIO over tcm_loop: one fileio LU, three I_T nexuses -> three /dev/sdX ---------------
# Only in the probe guest: PREEMPT AND ABORT through tcm_loop hangs the kernel, and LIO's
# reservations are covered over iSCSI (below), where the whole suite runs.
if [ "$MODE" = probe ] && [ -d $T ] && [ -e /mods/tcm_loop.ko ]; then
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
    if [ "$WIDE" -gt 0 ]; then
      # A second subsystem and namespace, WIDE connections with hostnqn wide-<i> and hostid
      # a<i in 7 hex digits>-0000-4000-8000-<i in 12 hex digits> (distinct from the three above: the host
      # refuses a known hostnqn with another hostid and the reverse).
      t0=$(uptime_s)
      dd if=/dev/zero of=/tmp/ns2.img bs=1M count=8 2>/dev/null
      W=$N/subsystems/prfence-wide
      mkdir $W; echo 1 >$W/attr_allow_any_host
      mkdir $W/namespaces/1
      echo /tmp/ns2.img >$W/namespaces/1/device_path
      echo 6f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f9 >$W/namespaces/1/device_nguid 2>/dev/null
      echo 1 >$W/namespaces/1/resv_enable
      echo 1 >$W/namespaces/1/enable
      ln -s $W $N/ports/1/subsystems/prfence-wide
      n0=$(ls -d /sys/block/nvme*n1 | wc -l)
      # One I/O queue each (the default is one per CPU): less to set up under TCG.
      for i in $(seq 1 "$WIDE"); do
        hid=$(printf 'a%07x-0000-4000-8000-%012x' "$i" "$i")
        echo "transport=loop,nqn=prfence-wide,hostnqn=nqn.2026-11.io.prfence:wide-$i,hostid=$hid,nr_io_queues=1" >/dev/nvme-fabrics || say "nvmet wide connect $i failed"
      done
      # The namespaces appear while the iSCSI targets are set up (collected after them, below).
      nv_n0=$n0 nv_t0=$t0
    fi
    nvmet_devs="$nv"
  else
    say "nvmet has no resv_enable on $(uname -r): NVMe reservations need kernel >= 6.13"
  fi
fi

# --- a block device without PR support (brd ram disk) -----------------------------------
[ -e /dev/ram0 ] && NO_PR=/dev/ram0

# The iSCSI portal listens on loopback; the e2e test runs kube-apiserver and etcd there.
ip link set lo up
mkdir -p /host
# The bench guest caches the read-only root as a node's page cache would (cache=loose):
# without it every process start (fence_scsi's python3, sg_persist) reads its files over
# 9p again and the device bench would time the share, not the tools.
o=trans=virtio,version=9p2000.L,ro
[ "$MODE" = bench ] && o="$o,cache=loose"
mount -t 9p -o "$o" hostroot /host || { echo "PRFENCE-RC 97"; poweroff -f; }
mount -t proc p /host/proc; mount -t sysfs s /host/sys; mount -t devtmpfs d /host/dev
mount -t tmpfs t /host/run; mkdir -p /host/run/home /host/run/tmp /host/run/out
# The host's writable share for the vitest report (the console can garble long output).
mount -t 9p -o trans=virtio,version=9p2000.L out /host/run/out || say "no out share: no test report"
# LIO writes APTPL metadata under /var/target/pr, resolved in the root of the process that
# runs the PR OUT command: the ioctl caller's chroot for tcm_loop, the initramfs for the
# iSCSI target's kernel threads (both roots have it).
mount -t tmpfs t /host/var/target 2>/dev/null && mkdir -p /host/var/target/pr

# --- LIO over iSCSI on the guest's loopback: one fileio LU, three sessions -> three /dev/sdX
# (and the wide set: a second target and LU, WIDE sessions)
# The target portal is 127.0.0.1:3260 (generate_node_acls: any initiator name gets LUN 0);
# the initiator is open-iscsi from the host's root (test/kernel/setup.sh installs it),
# iscsid + iscsiadm run in the chroot with tmpfs state directories, and log in three times
# through three ifaces with their own initiator names: three I_T nexuses to one LU.
if [ "$MODE" != probe ] && [ -d $T ] && [ -e /mods/iscsi_target_mod.ko ] && [ -x /host/usr/sbin/iscsiadm ]; then
  H=/host
  # One fileio LU (/tmp/lun<n>.img, <mb> MB) as LUN 0 of the target <iqn> on the portal, any
  # initiator admitted; with a unit serial, LIO reports VPD 0x80 and an NAA designator in
  # 0x83 (a WWID: multipath-tools needs one), without, neither.
  lio_iscsi_lu() { # n mb iqn [unit serial]
    local d=$T/core/fileio_$1/lun$1 g=$T/iscsi/$3/tpgt_1
    dd if=/dev/zero of=/tmp/lun$1.img bs=1M count="$2" 2>/dev/null
    mkdir -p "$d"
    echo "fd_dev_name=/tmp/lun$1.img,fd_dev_size=$(($2 * 1048576))" >"$d/control"
    echo 1 >"$d/enable"
    [ -z "$4" ] || echo "$4" >"$d/wwn/vpd_unit_serial" || say "LIO unit serial of lun$1 failed"
    mkdir -p "$g/lun/lun_0"
    ln -s "$d" "$g/lun/lun_0/lun$1"
    mkdir "$g/np/127.0.0.1:3260" || say "iSCSI portal 127.0.0.1:3260 of $3 failed"
    echo 1 >"$g/attrib/generate_node_acls"; echo 1 >"$g/attrib/cache_dynamic_acls"
    echo 0 >"$g/attrib/demo_mode_write_protect"; echo 0 >"$g/attrib/authentication"
    echo 1 >"$g/enable"
  }
  IQN=iqn.2026-11.io.prfence:lun1
  lio_iscsi_lu 1 32 $IQN 6b3f0c1e-2d4a-4f5b-8c7d-9e0a1b2c3d4e
  mount -t tmpfs t $H/etc/iscsi && mount -t tmpfs t $H/var/lib/iscsi || say "no tmpfs for open-iscsi state"
  mkdir -p $H/etc/iscsi/ifaces $H/etc/iscsi/nodes $H/etc/iscsi/send_targets $H/run/lock/iscsi
  echo "InitiatorName=iqn.2026-11.io.prfence:default" >$H/etc/iscsi/initiatorname.iscsi
  # No iscsid.startup (iscsid runs already); generous NOP-Out limits: the guest is emulated.
  cat >$H/etc/iscsi/iscsid.conf <<-EOF
	node.startup = manual
	node.session.timeo.replacement_timeout = 20
	node.conn[0].timeo.noop_out_interval = 10
	node.conn[0].timeo.noop_out_timeout = 30
	node.session.scan = auto
	EOF
  chroot $H /usr/sbin/iscsid -f -c /etc/iscsi/iscsid.conf -i /etc/iscsi/initiatorname.iscsi >/tmp/iscsid.log 2>&1 &
  adm() { chroot $H /usr/sbin/iscsiadm "$@"; }
  # iscsiadm -m session: 21 (no sessions) once iscsid answers, 20 (cannot connect) before.
  i=0; while adm -m session >/dev/null 2>&1; [ $? -ne 21 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  isc=""
  for i in 1 2 3; do
    adm -m iface -I if$i -o new >/dev/null && adm -m iface -I if$i -o update -n iface.initiatorname -v iqn.2026-11.io.prfence:host-$i >/dev/null
  done
  adm -m discovery -t st -p 127.0.0.1 -I if1 -I if2 -I if3 >/dev/null || say "iSCSI discovery failed"
  n0=$(ls -d /sys/block/sd* 2>/dev/null | wc -l)
  for i in 1 2 3; do
    adm -m node -T $IQN -p 127.0.0.1 -I if$i --login >/dev/null || say "iSCSI login through if$i failed"
    wait_new "/sys/block/sd*" "$((n0 + i))"
    for d in $(ls /sys/block | grep '^sd'); do
      readlink -f /sys/block/$d | grep -q /session || continue
      case " $isc " in *" /dev/$d "*) ;; *) isc="$isc /dev/$d" ;; esac
    done
  done
  if [ "$WIDE" -gt 0 ]; then
    # A second target (its own LU), WIDE sessions through ifaces wide1.. with the initiator
    # names wide-<i>, logged in all at once; each disk is matched to its session's name.
    t0=$(uptime_s)
    WIQN=iqn.2026-11.io.prfence:wide
    lio_iscsi_lu 2 8 $WIQN
    # The iface records written as iscsiadm -m iface -o new/update would (one process
    # start per iface and a discovery session per iface cost seconds each under TCG).
    for i in $(seq 1 "$WIDE"); do
      printf 'iface.iscsi_ifacename = wide%s\niface.transport_name = tcp\niface.initiatorname = iqn.2026-11.io.prfence:wide-%s\n' "$i" "$i" >$H/etc/iscsi/ifaces/wide$i
    done
    # One node record made by iscsiadm (through wide1), copied for the other ifaces.
    adm -m node -o new -T $WIQN -p 127.0.0.1:3260,1 -I wide1 >/dev/null || say "iSCSI node record (wide) failed"
    rec=$(ls -d $H/etc/iscsi/nodes/$WIQN/*/wide1 2>/dev/null)
    if [ -f "$rec" ]; then
      for i in $(seq 2 "$WIDE"); do
        sed -e "s/^\(iface\.iscsi_ifacename = wide\)1\$/\1$i/" -e "s/^\(iface\.initiatorname = .*:wide-\)1\$/\1$i/" "$rec" >"${rec%1}$i"
      done
    else
      say "iSCSI wide set: no node record file at $H/etc/iscsi/nodes/$WIQN/*/wide1: $(find $H/etc/iscsi/nodes | head -5)"
    fi
    say "iSCSI wide set: records after $(awk "BEGIN{print $(uptime_s) - $t0}") s: $(ls $H/etc/iscsi/nodes/$WIQN/*/ 2>/dev/null | wc -l)"
    n0=$(ls -d /sys/block/sd* 2>/dev/null | wc -l)
    # (Its stderr only on failure: sessions still logging in make it print "could not read
    # session targetname" while it lists them.)
    adm -m node -T $WIQN -p 127.0.0.1:3260 --login >/dev/null 2>/tmp/wide-login.err ||
      { say "iSCSI login to $WIQN failed"; sed 's/^/PRFENCE-LOG iscsiadm: /' /tmp/wide-login.err; }
    say "iSCSI wide set: logged in after $(awk "BEGIN{print $(uptime_s) - $t0}") s"
    wait_new "/sys/block/sd*" "$((n0 + WIDE))" 600
    # Each session's disk by its initiator name wide-<i>, then in that order (the order the
    # suite registers them in). Shell builtins only: a fork costs milliseconds under TCG.
    for s in /sys/class/iscsi_session/session*; do
      read -r tn <$s/targetname 2>/dev/null && [ "$tn" = $WIQN ] || continue
      read -r iname <$s/initiatorname 2>/dev/null || continue
      for b in $s/device/target*/*/block/*; do [ -e "$b" ] && eval "wd_${iname##*:wide-}=/dev/${b##*/}"; done
    done
    for i in $(seq 1 "$WIDE"); do eval "wide=\"\$wide \${wd_$i}\""; done
    say "iSCSI wide set: $(echo $wide | wc -w) of $WIDE sessions in $(awk "BEGIN{print $(uptime_s) - $t0}") s"
    [ "$(echo $wide | wc -w)" = "$WIDE" ] || wide=""
  fi
  if [ "$(echo $isc | wc -w)" = 3 ]; then
    # shellcheck disable=SC2086
    add_topology lio-iscsi scsi "" $isc
  else
    say "iSCSI: $(echo $isc | wc -w) of 3 sessions gave a disk:$isc"; sed 's/^/PRFENCE-LOG iscsid: /' /tmp/iscsid.log
  fi
elif [ "$MODE" != probe ]; then
  say "no LIO over iSCSI: iscsi_target_mod or the host's open-iscsi (test/kernel/setup.sh) missing"
fi

# --- nvmet: the wide set's namespaces (connected above), then the topology (listed first)
if [ -n "$nvmet_devs" ]; then
  if [ -n "$nv_t0" ]; then
    wait_new "/sys/block/nvme*n1" "$((nv_n0 + WIDE))" 600
    # Each namespace by its controller's hostnqn wide-<i>, then in that order (the order the
    # suite registers them in). Shell builtins only, as for the iSCSI wide set.
    for d in /sys/block/nvme*n1; do
      read -r sn <$d/device/subsysnqn 2>/dev/null && [ "$sn" = prfence-wide ] || continue
      read -r hn <$d/device/hostnqn 2>/dev/null && eval "nd_${hn##*:wide-}=/dev/${d##*/}"
    done
    for i in $(seq 1 "$WIDE"); do eval "wide=\"\$wide \${nd_$i}\""; done
    say "nvmet wide set: $(echo $wide | wc -w) of $WIDE connections $(awk "BEGIN{print $(uptime_s) - $nv_t0}") s after the first"
    [ "$(echo $wide | wc -w)" = "$WIDE" ] || wide=""
  fi
  rest=$topologies topologies=""
  # shellcheck disable=SC2086
  add_topology nvmet-loop nvme "" $nvmet_devs
  topologies="$topologies${rest:+,}$rest"
fi

echo "PRFENCE-KERNEL $(uname -r)"
echo "PRFENCE-TOPOLOGIES [$topologies]"
if [ "$MODE" = bench ]; then
  chroot /host /usr/bin/env -i HOME=/run/home TMPDIR=/run/tmp PATH="$REPO/node_modules/.bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    PRFENCE_KERNEL_TOPOLOGIES="[$topologies]" PRFENCE_BENCH_C_LOOP="$C_LOOP" \
    /bin/sh -c "cd '$REPO' && node dist/bench/device/device-bench.js"
  echo "PRFENCE-RC $?"
  poweroff -f
fi
chroot /host /usr/bin/env -i HOME=/run/home TMPDIR=/run/tmp PATH="$REPO/node_modules/.bin:/usr/local/bin:/usr/bin:/bin" \
  PRFENCE_KERNEL_TOPOLOGIES="[$topologies]" PRFENCE_WIDE="$WIDE" PRFENCE_NO_PR_DEVICE="$NO_PR" PRFENCE_LIMITATION_PROBE="$PROBE" PRFENCE_BIN_DIR="$BIN_DIR" CI=true \
  /bin/sh -c "cd '$REPO' && node node_modules/vitest/vitest.mjs run --configLoader runner --no-cache --no-fsModuleCache --project ${PROJECT:-kernel} $VITEST_ARGS --reporter=verbose --reporter=json --outputFile=/run/out/vitest.json"
rc=$?
sync
echo "PRFENCE-RC $rc"
poweroff -f
