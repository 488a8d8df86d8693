/**
 * Development users of the local identity provider, from a JSON file:
 *   [{ "username": "alice", "password": "...", "tenant": "acme" }, ...]
 * The username is the subject (`sub`) of the user's tokens; `tenant` becomes the tenant claim.
 * A national eID provider would hold real accounts; nodes only ever see the signed claims.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { TENANT_PATTERN } from '../shared/document.ts';
import { KmaasError } from '../shared/errors.ts';

export interface DevUser {
  username: string;
  password: string;
  tenant: string;
}

const userSchema = z
  .object({
    username: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, 'expected 1-64 of A-Z a-z 0-9 _.@-'),
    password: z.string().min(8, 'expected at least 8 characters').max(256),
    // A KMaaS tenant name, so the claim names a tenant as it is.
    tenant: z.string().regex(TENANT_PATTERN, "expected 1-63 characters of a-z, 0-9, '.', '_', '-'"),
  })
  .strict();

const usersSchema = z
  .array(userSchema)
  .min(1, 'expected at least one user')
  .refine(
    (users) => new Set(users.map((u) => u.username)).size === users.length,
    'usernames must differ',
  );

/** Parse and validate a users file; errors name the entry and field, never a password. */
export function loadUsers(file: string): UserDirectory {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new KmaasError('ERR_CONFIG', `KMAAS_IDP_USERS_FILE: cannot read ${file} as JSON`, {
      field: 'KMAAS_IDP_USERS_FILE',
      reason: (err as NodeJS.ErrnoException).code ?? 'invalid JSON',
    });
  }
  const parsed = usersSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.join('.');
    throw new KmaasError('ERR_CONFIG', `KMAAS_IDP_USERS_FILE: ${at || 'users'}: ${issue.message}`, {
      field: 'KMAAS_IDP_USERS_FILE',
      path: at,
    });
  }
  return new UserDirectory(parsed.data);
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export class UserDirectory {
  private readonly byName: Map<string, { tenant: string; digest: Buffer }>;
  /** Compared against when the username is unknown, so both cases take the same time. */
  private readonly decoy = digest('kmaas-idp decoy password');

  constructor(users: readonly DevUser[]) {
    this.byName = new Map(
      users.map((u) => [u.username, { tenant: u.tenant, digest: digest(u.password) }]),
    );
  }

  /**
   * The user, when the password is right. Passwords are compared as SHA-256 digests with
   * timingSafeEqual: equal lengths, and a comparison whose time says nothing about the password.
   */
  authenticate(username: string, password: string): { sub: string; tenant: string } | undefined {
    const user = this.byName.get(username);
    const ok = timingSafeEqual(digest(password), user?.digest ?? this.decoy);
    return ok && user ? { sub: username, tenant: user.tenant } : undefined;
  }

  /** The tenant of a subject, for the claims of its tokens. */
  tenantOf(sub: string): string | undefined {
    return this.byName.get(sub)?.tenant;
  }
}
