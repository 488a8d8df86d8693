/**
 * What `kmaas tenant retire` checks against the tenant's listed versions before anything is
 * signed. A retire cannot be undone: the nodes erase their shares, so retiring a tenant's last
 * live version makes every one of its documents unreadable for good, and the name cannot be
 * created again. That takes an explicit `--last`.
 */
import { KmaasError } from '../shared/errors.ts';
import type { TenantInfo } from '../client/index.ts';

export function checkRetire(info: TenantInfo, version: number, last: boolean): void {
  const { tenant } = info;
  const listed = info.versions.map((v) => v.version).sort((a, b) => a - b);
  const target = info.versions.find((v) => v.version === version);
  if (!target) {
    throw new KmaasError(
      'ERR_UNKNOWN_KEY_VERSION',
      `tenant ${tenant} has no key version ${version} (its versions: ${listed.join(', ') || 'none'})`,
      { tenant, version },
    );
  }
  if (target.retired === true) {
    throw new KmaasError(
      'ERR_KEY_RETIRED',
      `tenant ${tenant} key version ${version} is already retired`,
      {
        tenant,
        version,
      },
    );
  }
  const otherLive = info.versions.some((v) => v.version !== version && v.retired !== true);
  if (!otherLive && !last) {
    throw new KmaasError(
      'ERR_LAST_KEY_VERSION',
      `version ${version} is tenant ${tenant}'s last live key version: retiring it makes every ${tenant} document unreadable for good, and the tenant name cannot be created again; make a new version first (kmaas tenant rotate ${tenant}, then kmaas rewrap), or pass --last if that is meant`,
      { tenant, version },
    );
  }
}
