/**
 * docker-compose.yml cannot be run here (no Docker engine), so it is checked for what can drift:
 * it parses, it has the reference topology, and every setting it passes is one the processes read.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT } from '../scripts/lib/child.ts';

interface Service {
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  secrets?: string[];
}

describe('docker-compose.yml', () => {
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), {
    merge: true,
  }) as {
    services: Record<string, Service>;
    secrets: Record<string, { file: string }>;
  };
  const names = Object.keys(compose.services);

  it('has Redis, two coordinators and five nodes, each node with its own volume and secret', () => {
    expect(names).to.include('redis');
    expect(names.filter((n) => n.startsWith('coordinator-'))).to.have.length(2);
    const nodes = names.filter((n) => n.startsWith('node-'));
    expect(nodes).to.have.length(5);
    const volumes = new Set(nodes.map((n) => compose.services[n]!.volumes![0]));
    expect(volumes.size).to.equal(5);
    for (const n of nodes) expect(compose.services[n]!.secrets).to.include(`${n}-secret`);
  });

  it('passes only settings that the node and coordinator configuration read', () => {
    const config =
      readFileSync(join(ROOT, 'nodes', 'config.ts'), 'utf8') +
      readFileSync(join(ROOT, 'coordinator', 'config.ts'), 'utf8');
    for (const [name, svc] of Object.entries(compose.services)) {
      if (name === 'redis') continue;
      for (const key of Object.keys(svc.environment ?? {}))
        expect(config, `${name}: ${key}`).to.contain(key);
      const entry = svc.command?.at(-1);
      expect(entry, name).to.match(/^(nodes|coordinator)\/main\.ts$/);
    }
  });

  it('names a secret file for every secret a service uses', () => {
    for (const svc of Object.values(compose.services)) {
      for (const s of svc.secrets ?? []) expect(compose.secrets[s], s).to.have.property('file');
    }
  });
});
