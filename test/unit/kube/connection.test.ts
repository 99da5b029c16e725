import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  connectionFromKubeconfig,
  connectionFromKubeconfigFile,
  inClusterConnection,
  KubeConfigError,
} from '../../../src/kube/connection.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const doc = (user: string, current = 'c1') => `
apiVersion: v1
kind: Config
current-context: ${current}
clusters:
- name: k1
  cluster: {server: 'https://10.0.0.1:6443', certificate-authority-data: ${b64('CA')}}
- name: k2
  cluster: {server: 'https://10.0.0.2:6443', insecure-skip-tls-verify: true}
users:
- name: u1
  user: ${user}
contexts:
- name: c1
  context: {cluster: k1, user: u1}
- name: c2
  context: {cluster: k2, user: u1}
`;

describe('kubeconfig and in-cluster connections', () => {
  it('current context: server, CA and client certificate from *-data fields', () => {
    const c = connectionFromKubeconfig(
      doc(`{client-certificate-data: ${b64('CERT')}, client-key-data: ${b64('KEY')}}`),
    );
    expect(c.server).toBe('https://10.0.0.1:6443');
    expect(c.ca?.toString()).toBe('CA');
    expect(c.cert?.toString()).toBe('CERT');
    expect(c.key?.toString()).toBe('KEY');
    expect(c.token).toBeUndefined();
  });

  it('another context, a token, insecure-skip-tls-verify', () => {
    const c = connectionFromKubeconfig(doc('{token: abc}'), '.', 'c2');
    expect(c.server).toBe('https://10.0.0.2:6443');
    expect(c.insecureSkipTlsVerify).toBe(true);
    expect(c.token?.()).toBe('abc');
  });

  it('file paths resolve against the kubeconfig directory; tokenFile is read on each call', () => {
    const dir = mkdtempSync(join(tmpdir(), 'prfence-kc-'));
    writeFileSync(join(dir, 'cert.pem'), 'C');
    writeFileSync(join(dir, 'key.pem'), 'K');
    writeFileSync(join(dir, 'tok'), 't1\n');
    writeFileSync(
      join(dir, 'config'),
      doc('{client-certificate: cert.pem, client-key: key.pem, tokenFile: tok}'),
    );
    const c = connectionFromKubeconfigFile(join(dir, 'config'));
    expect([c.cert?.toString(), c.key?.toString(), c.token?.()]).toEqual(['C', 'K', 't1']);
    writeFileSync(join(dir, 'tok'), 't2');
    expect(c.token?.()).toBe('t2');
  });

  it('bad input -> KubeConfigError with the reason', () => {
    expect(() => connectionFromKubeconfig(doc('{token: x}', 'nope'))).toThrow(/context "nope" not found/);
    expect(() => connectionFromKubeconfig(doc('{exec: {command: aws}}'))).toThrow(KubeConfigError);
    expect(() => connectionFromKubeconfigFile('/nonexistent/kubeconfig')).toThrow(/kubeconfig \/nonexistent/);
    expect(() => inClusterConnection({})).toThrow(/KUBERNETES_SERVICE_HOST/);
  });

  it('in-cluster: service host/port and the service account token and CA', () => {
    const dir = mkdtempSync(join(tmpdir(), 'prfence-sa-'));
    writeFileSync(join(dir, 'ca.crt'), 'SACA');
    writeFileSync(join(dir, 'token'), 'sa-token\n');
    const c = inClusterConnection(
      { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' },
      dir,
    );
    expect(c.server).toBe('https://[fd00::1]:443');
    expect(c.ca?.toString()).toBe('SACA');
    expect(c.token?.()).toBe('sa-token');
  });
});
