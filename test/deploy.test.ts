/**
 * docker-compose.yml cannot be run here (no Docker engine), so it is checked for what can drift:
 * it parses, it has the reference topology (with the identity provider whose issuer the nodes
 * trust), and every setting it passes is one the processes read.
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

  it('passes only settings that the node, coordinator and identity provider configuration read', () => {
    const read = (part: string) => readFileSync(join(ROOT, part, 'config.ts'), 'utf8');
    const config = { nodes: read('nodes'), coordinator: read('coordinator'), idp: read('idp') };
    for (const [name, svc] of Object.entries(compose.services)) {
      if (name === 'redis') continue;
      const entry = svc.command?.at(-1);
      const part = /^(nodes|coordinator|idp)\/main\.ts$/.exec(entry ?? '')?.[1];
      expect(part, `${name}: ${entry}`).to.be.a('string');
      for (const key of Object.keys(svc.environment ?? {})) {
        expect(config[part as keyof typeof config], `${name}: ${key}`).to.contain(key);
      }
    }
  });

  it('runs the identity provider, whose issuer every node and coordinator trusts; no client token', () => {
    const idp = compose.services.idp!;
    expect(idp.command?.at(-1)).to.equal('idp/main.ts');
    const env = idp.environment!;
    expect(env.KMAAS_IDP_HOST).to.equal('0.0.0.0');
    const issuer = env.KMAAS_IDP_ISSUER!;
    expect(issuer).to.equal(`http://idp:${env.KMAAS_IDP_PORT}`);
    expect(idp.secrets).to.deep.equal(['idp-users']);
    expect(env.KMAAS_IDP_USERS_FILE).to.equal('/run/secrets/idp-users');
    // The signing keys persist in a volume of its own.
    expect(idp.volumes).to.deep.equal(['idp-data:/data']);
    expect(env.KMAAS_IDP_KEYS_FILE).to.match(/^\/data\//);
    for (const name of names.filter((n) => /^(node|coordinator)-/.test(n))) {
      expect(compose.services[name]!.environment?.KMAAS_OIDC_ISSUER, name).to.equal(issuer);
    }
    expect(Object.keys(compose.secrets)).to.not.include('client-token');
    for (const svc of Object.values(compose.services)) {
      for (const key of Object.keys(svc.environment ?? {}))
        expect(key).to.not.match(/CLIENT_TOKEN/);
    }
  });

  it('names a secret file for every secret a service uses', () => {
    for (const svc of Object.values(compose.services)) {
      for (const s of svc.secrets ?? []) expect(compose.secrets[s], s).to.have.property('file');
    }
  });
});
