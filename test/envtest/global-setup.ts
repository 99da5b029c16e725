/**
 * vitest globalSetup of the `integration` project: one real control plane for the run,
 * with the chart's CRDs installed. Tests get the kubeconfig through inject('kubeconfigPath')
 * (see kube.ts) and PRFENCE_TEST_KUBECONFIG.
 */
import type { TestProject } from 'vitest/node';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { installCrds, waitCrdStorage } from './crds.js';

let cp: ControlPlane | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  cp = await startControlPlane();
  const crds = await installCrds(cp.adminKubeConfig());
  await waitCrdStorage(cp.adminKubeConfig(), crds);
  console.log(
    `envtest: control plane at ${cp.server} in ${Date.now() - t0} ms; CRDs: ${crds.join(', ') || 'none'}`,
  );
  process.env.PRFENCE_TEST_KUBECONFIG = cp.kubeconfigPath;
  project.provide('kubeconfigPath', cp.kubeconfigPath);
  project.provide('apiServerUrl', cp.server);
  return async () => {
    await cp?.stop();
  };
}
