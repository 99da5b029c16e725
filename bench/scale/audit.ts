/**
 * Who asked the API server what, and when: the scale benchmark runs kube-apiserver with an
 * audit log of every request except the load generator's object writes (Node status
 * heartbeats, PV and VolumeAttachment creation), at Metadata level (no bodies), and reads
 * it back to count the agents' requests and to time their re-lists after a restart.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Writes the policy into `dir`; returns the kube-apiserver flags ({dir}: the control plane's). */
export function auditFlags(dir: string): string[] {
  const policy = {
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['RequestReceived'],
    rules: [
      {
        level: 'None',
        verbs: ['create', 'update', 'patch', 'delete'],
        resources: [
          {
            group: '',
            resources: ['nodes', 'nodes/status', 'persistentvolumes', 'persistentvolumes/status'],
          },
          { group: 'storage.k8s.io', resources: ['volumeattachments', 'volumeattachments/status'] },
        ],
      },
      { level: 'Metadata' },
    ],
  };
  const file = join(dir, 'audit-policy.yaml');
  writeFileSync(file, JSON.stringify(policy));
  return [`--audit-policy-file=${file}`, '--audit-log-path={dir}/audit.log', '--audit-log-format=json'];
}

export interface AuditRequest {
  id: string;
  verb: string;
  userAgent: string;
  uri: string;
  /** requestReceivedTimestamp, ms since the epoch. */
  at: number;
  code: number | undefined;
}

/** The requests in the audit log (one per audit ID), optionally only those received in [from, to]. */
export function readAudit(file: string, from = 0, to = Infinity): AuditRequest[] {
  const out = new Map<string, AuditRequest>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as {
      auditID: string;
      verb: string;
      userAgent?: string;
      requestURI: string;
      requestReceivedTimestamp: string;
      responseStatus?: { code?: number };
    };
    const at = Date.parse(e.requestReceivedTimestamp);
    if (at < from || at > to) continue;
    const prev = out.get(e.auditID);
    out.set(e.auditID, {
      id: e.auditID,
      verb: e.verb,
      userAgent: e.userAgent ?? '',
      uri: e.requestURI,
      at,
      code: e.responseStatus?.code ?? prev?.code,
    });
  }
  return [...out.values()];
}
