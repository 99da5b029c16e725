/**
 * Cluster objects of realistic size for the scale benchmark, shaped after what a kubelet,
 * kube-controller-manager, a CSI external-provisioner and external-attacher (a block SAN
 * driver) write: labelled Nodes with the kubelet's status (conditions, capacity, node info,
 * the image list, attached volumes), CSI PersistentVolumes with claim reference, secrets
 * and volume attributes, and attached CSI VolumeAttachments with attachment metadata.
 * Each is written by the component that owns it in a real cluster (create, then status),
 * so managedFields carry those managers, as a real object's do.
 */
import { createHash } from 'node:crypto';
import { DEVICE_ANNOTATION } from '../../src/agent/cluster-view.js';
import type { RestClient } from '../../src/kube/rest-client.js';

/** Device paths the agents' own PVs name: memory-devices.ts opens a memory LU for them. */
export const BENCH_DEVICE_DIR = '/dev/prfence-bench/';
export const DRIVER = 'block.csi.san.example.com';
export const STORAGE_CLASS = 'san-block';
const hex = (s: string, n: number) => createHash('sha256').update(s).digest('hex').slice(0, n);
const uuid = (s: string) => {
  const h = hex(s, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
};

export const nodeName = (i: number) => `scale-node-${i}`;
export const pvName = (i: number) => `pvc-${uuid(`pv-${i}`)}`;
export const vaName = (pv: string, node: string) => `csi-${hex(`${pv}/${DRIVER}/${node}`, 64)}`;
/** The WWN a PV's volume attributes carry (its device identity is `wwid:` and this). */
export const wwnOf = (i: number) => `600a0980${hex(`wwn${i}`, 24)}`;
/** The device path an agent's PV names (memory-devices.ts opens a memory LU for it). */
export const benchDevicePath = (pv: string) => `${BENCH_DEVICE_DIR}${pv}`;

const IMAGES = [
  'registry.k8s.io/kube-proxy',
  'registry.k8s.io/pause',
  'docker.io/calico/node',
  'docker.io/calico/cni',
  'docker.io/calico/kube-controllers',
  'registry.k8s.io/coredns/coredns',
  'registry.k8s.io/sig-storage/csi-node-driver-registrar',
  'registry.k8s.io/sig-storage/livenessprobe',
  'quay.io/prometheus/node-exporter',
  'docker.io/grafana/promtail',
  'docker.io/library/nginx',
  'docker.io/library/redis',
  'docker.io/library/postgres',
  'quay.io/jetstack/cert-manager-controller',
  'registry.k8s.io/ingress-nginx/controller',
  'docker.io/bitnami/kafka',
  'docker.io/library/busybox',
  'ghcr.io/example/prfence',
  'docker.io/san/csi-driver',
  'docker.io/library/python',
  'docker.io/library/node',
  'quay.io/prometheus/prometheus',
  'docker.io/library/alpine',
  'docker.io/fluent/fluent-bit',
  'registry.k8s.io/metrics-server/metrics-server',
  'docker.io/library/mysql',
  'docker.io/library/golang',
  'docker.io/istio/proxyv2',
  'docker.io/library/memcached',
  'docker.io/library/rabbitmq',
];

/** A Node as the kubelet registers it (metadata and spec; the status follows with {@link nodeStatus}). */
export function nodeObject(name: string, i: number): object {
  const zone = `eu-west-1${'abc'[i % 3]}`;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/instance-type': 'm5.4xlarge',
        'beta.kubernetes.io/os': 'linux',
        'failure-domain.beta.kubernetes.io/region': 'eu-west-1',
        'failure-domain.beta.kubernetes.io/zone': zone,
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'node.kubernetes.io/instance-type': 'm5.4xlarge',
        'node-role.kubernetes.io/worker': '',
        'topology.kubernetes.io/region': 'eu-west-1',
        'topology.kubernetes.io/zone': zone,
        [`topology.${DRIVER}/zone`]: zone,
      },
      annotations: {
        'csi.volume.kubernetes.io/nodeid': JSON.stringify({ [DRIVER]: `iqn.2004-10.com.example:${name}` }),
        'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///run/containerd/containerd.sock',
        'node.alpha.kubernetes.io/ttl': '0',
        'projectcalico.org/IPv4Address': `10.${(i >> 8) & 255}.${i & 255}.10/16`,
        'projectcalico.org/IPv4IPIPTunnelAddr': `192.168.${i & 255}.0`,
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
    },
    spec: {
      podCIDR: `10.244.${i & 255}.0/24`,
      podCIDRs: [`10.244.${i & 255}.0/24`],
      providerID: `aws:///${zone}/i-0${hex(name, 16)}`,
    },
  };
}

const CONDITIONS: [string, string, string, string][] = [
  ['MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'],
  ['DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'],
  ['PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'],
  ['Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'],
];

/** The kubelet's node status: `volumes` are the PVs attached there. */
export function nodeStatus(name: string, i: number, volumes: readonly string[]): object {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const resources = {
    cpu: '16',
    'ephemeral-storage': '203034800Ki',
    'hugepages-1Gi': '0',
    'hugepages-2Mi': '0',
    memory: '65023684Ki',
    pods: '110',
  };
  const uniq = (v: string) => `kubernetes.io/csi/${DRIVER}^${v}`;
  return {
    status: {
      capacity: resources,
      allocatable: { ...resources, cpu: '15890m', 'ephemeral-storage': '187119826732', memory: '63873732Ki' },
      conditions: CONDITIONS.map(([type, status, reason, message]) => ({
        type,
        status,
        lastHeartbeatTime: now,
        lastTransitionTime: now,
        reason,
        message,
      })),
      addresses: [
        { type: 'InternalIP', address: `10.${(i >> 8) & 255}.${i & 255}.10` },
        { type: 'InternalDNS', address: `ip-10-${(i >> 8) & 255}-${i & 255}-10.eu-west-1.compute.internal` },
        { type: 'Hostname', address: name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: hex(`m${name}`, 32),
        systemUUID: uuid(`s${name}`),
        bootID: uuid(`b${name}`),
        kernelVersion: '6.1.0-28-cloud-amd64',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.24',
        kubeletVersion: 'v1.31.4',
        kubeProxyVersion: 'v1.31.4',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
      images: IMAGES.map((img, k) => ({
        names: [`${img}@sha256:${hex(`${img}${k}`, 64)}`, `${img}:v1.${k}.${k % 7}`],
        sizeBytes: 10_000_000 + k * 7_654_321,
      })),
      volumesInUse: volumes.map(uniq),
      volumesAttached: volumes.map((v) => ({ name: uniq(v), devicePath: '' })),
    },
  };
}

/** The kubelet's status heartbeat: every condition's lastHeartbeatTime (a strategic merge patch). */
export function heartbeatPatch(): object {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return { status: { conditions: CONDITIONS.map(([type]) => ({ type, lastHeartbeatTime: now })) } };
}

/** A StorageClass of the SAN driver (PVs name it). */
export function storageClass(): object {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: { name: STORAGE_CLASS },
    provisioner: DRIVER,
    parameters: {
      fsType: 'ext4',
      'csi.storage.k8s.io/provisioner-secret-name': 'san-credentials',
      'csi.storage.k8s.io/provisioner-secret-namespace': 'storage-system',
      'csi.storage.k8s.io/controller-publish-secret-name': 'san-credentials',
      'csi.storage.k8s.io/controller-publish-secret-namespace': 'storage-system',
    },
    reclaimPolicy: 'Delete',
    volumeBindingMode: 'Immediate',
    allowVolumeExpansion: true,
  };
}

/** A dynamically provisioned CSI PV; `device` (the agents' own PVs) adds prfence's device annotation. */
export function persistentVolume(i: number, device?: string): object {
  const name = pvName(i);
  const secret = { name: 'san-credentials', namespace: 'storage-system' };
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name,
      annotations: {
        'pv.kubernetes.io/provisioned-by': DRIVER,
        'volume.kubernetes.io/provisioner-deletion-secret-name': secret.name,
        'volume.kubernetes.io/provisioner-deletion-secret-namespace': secret.namespace,
        ...(device ? { [DEVICE_ANNOTATION]: device } : {}),
      },
      finalizers: ['kubernetes.io/pv-protection', `external-attacher/${DRIVER.replaceAll('.', '-')}`],
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      capacity: { storage: '100Gi' },
      claimRef: {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        name: `data-app-${i}-0`,
        namespace: `team-${i % 50}`,
        resourceVersion: String(1_000_000 + i),
        uid: name.slice(4),
      },
      csi: {
        driver: DRIVER,
        fsType: 'ext4',
        volumeHandle: `${hex(`array${i % 4}`, 8)}:${name}`,
        volumeAttributes: {
          backend: `array-${i % 4}`,
          internalName: `k8s_${name.replaceAll('-', '_')}`,
          protocol: 'iscsi',
          wwn: wwnOf(i),
          'storage.kubernetes.io/csiProvisionerIdentity': `1735689600000-8081-${DRIVER}`,
        },
        controllerPublishSecretRef: secret,
        nodeStageSecretRef: secret,
        controllerExpandSecretRef: secret,
      },
      persistentVolumeReclaimPolicy: 'Delete',
      storageClassName: STORAGE_CLASS,
      volumeMode: 'Filesystem',
    },
  };
}

/** The attach-detach controller's VolumeAttachment, as the external-attacher leaves it (attached). */
export function volumeAttachment(pv: string, node: string): object {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'VolumeAttachment',
    metadata: {
      name: vaName(pv, node),
      annotations: { 'csi.alpha.kubernetes.io/node-id': `iqn.2004-10.com.example:${node}` },
      finalizers: [`external-attacher/${DRIVER.replaceAll('.', '-')}`],
    },
    spec: { attacher: DRIVER, nodeName: node, source: { persistentVolumeName: pv } },
  };
}

function attachedStatus(pv: string): object {
  return {
    status: {
      attached: true,
      attachmentMetadata: {
        lun: String(parseInt(hex(pv, 2), 16)),
        targetPortal: '10.200.0.10:3260',
        targetIQN: 'iqn.1992-08.com.example:sn.4242424242',
      },
    },
  };
}

/** Creates a Node and writes its status, as the kubelet does. */
/** Creates a Node and writes its status, as the kubelet does; resolves with its UID. */
export async function createNode(api: RestClient, i: number, volumes: readonly string[]): Promise<string> {
  const name = nodeName(i);
  const created = await api.send<{ metadata: { uid: string } }>({
    method: 'POST',
    path: '/api/v1/nodes',
    body: nodeObject(name, i),
    query: { fieldManager: 'kubelet' },
  });
  await patchNodeStatus(api, name, nodeStatus(name, i, volumes));
  return created.metadata.uid;
}

export function patchNodeStatus(api: RestClient, name: string, body: object): Promise<unknown> {
  return api.send({
    method: 'PATCH',
    path: `/api/v1/nodes/${name}/status`,
    body,
    contentType: 'application/strategic-merge-patch+json',
    query: { fieldManager: 'kubelet' },
  });
}

/** A create by the component that makes the object, then its status by the one that owns that. */
async function createThenStatus(
  api: RestClient,
  collection: string,
  name: string,
  body: object,
  creator: string,
  status: object,
  statusWriter: string,
): Promise<void> {
  await api.send({ method: 'POST', path: collection, body, query: { fieldManager: creator } });
  await api.send({
    method: 'PATCH',
    path: `${collection}/${name}/status`,
    body: status,
    contentType: 'application/merge-patch+json',
    query: { fieldManager: statusWriter },
  });
}

/** Creates a bound PV (external-provisioner, then the PV controller's status). */
export function createPv(api: RestClient, i: number, device?: string): Promise<void> {
  return createThenStatus(
    api,
    '/api/v1/persistentvolumes',
    pvName(i),
    persistentVolume(i, device),
    'csi-provisioner',
    { status: { phase: 'Bound' } },
    'kube-controller-manager',
  );
}

/** Creates an attached VolumeAttachment (attach-detach controller, then the external-attacher's status). */
export function createVa(api: RestClient, pv: string, node: string): Promise<void> {
  return createThenStatus(
    api,
    '/apis/storage.k8s.io/v1/volumeattachments',
    vaName(pv, node),
    volumeAttachment(pv, node),
    'kube-controller-manager',
    attachedStatus(pv),
    'csi-attacher',
  );
}
