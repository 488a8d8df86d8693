/**
 * One error type for the whole service. Every failure carries a stable `code` that clients
 * switch on and an HTTP status that the HTTP layers map it to. The table below is the single
 * place where codes are defined and documented; `test/shared/errors.test.ts` fails when a code
 * is thrown somewhere but missing here, or listed here but missing from the README.
 */

export const ERROR_CODES = {
  ERR_MALFORMED_JSON: { status: 400, doc: 'The body or message is not valid JSON.' },
  ERR_VALIDATION: {
    status: 400,
    doc: 'A field is missing, has the wrong type or is out of range; `details.field` names it.',
  },
  ERR_BAD_BASE64: {
    status: 400,
    doc: 'A field that must be base64url is not canonical base64url.',
  },
  ERR_BAD_LENGTH: { status: 400, doc: 'A byte string has the wrong length for its type.' },
  ERR_INVALID_POINT: {
    status: 400,
    doc: 'Bytes that must encode a ristretto255 element do not (RFC 9496 section 4.3.1 decode fails, which also refuses non-canonical encodings).',
  },
  ERR_IDENTITY_POINT: {
    status: 400,
    doc: 'A group element is the identity, which RFC 9497 section 3.3 requires to be refused.',
  },
  ERR_INVALID_SCALAR: {
    status: 400,
    doc: 'A scalar is not canonical (not below the group order) or is zero.',
  },
  ERR_BAD_IDENTIFIER: {
    status: 400,
    doc: 'A Shamir identifier is zero, out of range or duplicated.',
  },
  ERR_EMPTY_BATCH: { status: 400, doc: 'A batch of blinded elements is empty.' },
  ERR_BATCH_TOO_LARGE: { status: 413, doc: 'A batch holds more blinded elements than allowed.' },
  ERR_MALFORMED_REQUEST: {
    status: 400,
    doc: 'The bytes received are not a well-formed HTTP/1.1 request; the connection is closed.',
  },
  ERR_HEADERS_TOO_LARGE: {
    status: 431,
    doc: "The request line and headers exceed the HTTP server's size limit (16 KiB by default); the connection is closed.",
  },
  ERR_BODY_TOO_LARGE: { status: 413, doc: 'The request body exceeds the size limit.' },
  ERR_BAD_THRESHOLD: {
    status: 400,
    doc: 'A threshold is below 2, above the committee size, or not a majority of it.',
  },
  ERR_UNAUTHORIZED: { status: 401, doc: 'The request carries no valid credential.' },
  ERR_TOKEN_MISSING: {
    status: 401,
    doc: 'An evaluation carries no access token (`Authorization: DPoP <token>`).',
  },
  ERR_TOKEN_MALFORMED: {
    status: 401,
    doc: 'The access token is not a well-formed JWT, or lacks a required claim (`sub`, `exp`).',
  },
  ERR_TOKEN_TYPE: {
    status: 401,
    doc: 'The token is not an access token: its `typ` header is not `at+jwt` (RFC 9068 section 2.1).',
  },
  ERR_TOKEN_UNSIGNED: {
    status: 401,
    doc: 'The access token is unsigned (`alg: none`).',
  },
  ERR_TOKEN_ALG: {
    status: 401,
    doc: 'The access token uses an algorithm that is not allowed; only ES256, ES384, EdDSA, RS256 and PS256 are.',
  },
  ERR_TOKEN_UNKNOWN_KEY: {
    status: 401,
    doc: "The access token names a key that is not in the issuer's JWKS, even after refetching it.",
  },
  ERR_TOKEN_SIGNATURE: {
    status: 401,
    doc: 'The access token signature does not verify.',
  },
  ERR_TOKEN_EXPIRED: {
    status: 401,
    doc: 'The access token has expired, or is not valid yet, beyond the allowed clock skew.',
  },
  ERR_TOKEN_ISSUER: {
    status: 401,
    doc: 'The access token comes from another issuer than the configured one.',
  },
  ERR_TOKEN_AUDIENCE: {
    status: 401,
    doc: 'The access token is not meant for this service (its `aud` lacks the configured audience).',
  },
  ERR_TOKEN_TENANT: {
    status: 403,
    doc: 'The access token is for another tenant than the one asked for, or names none.',
  },
  ERR_TOKEN_NOT_BOUND: {
    status: 401,
    doc: 'The access token is not bound to a DPoP key (no `cnf.jkt`, RFC 9449 section 6.1).',
  },
  ERR_DPOP_MISSING: {
    status: 401,
    doc: 'An evaluation carries no DPoP proof (`DPoP` header).',
  },
  ERR_DPOP_INVALID: {
    status: 401,
    doc: 'The DPoP proof is malformed, not `typ: dpop+jwt`, uses a disallowed algorithm, embeds no public key (or a private one), lacks a claim, or its signature does not verify.',
  },
  ERR_DPOP_KEY_MISMATCH: {
    status: 401,
    doc: 'The DPoP proof is signed by another key than the one the access token is bound to (`cnf.jkt`).',
  },
  ERR_DPOP_STALE: {
    status: 401,
    doc: 'The DPoP proof is too old, or dated in the future, beyond the allowed clock skew.',
  },
  ERR_DPOP_REPLAY: {
    status: 401,
    doc: 'The DPoP proof was already used (its `jti` was seen before).',
  },
  ERR_DPOP_ATH: {
    status: 401,
    doc: 'The DPoP proof was made for another access token (`ath`).',
  },
  ERR_DPOP_TARGET: {
    status: 401,
    doc: 'The DPoP proof was made for another method or path (`htm`, `htu`).',
  },
  ERR_DPOP_BINDING: {
    status: 401,
    doc: 'The DPoP proof was made for other blinded elements, tenant or key version (`kmaas_bh`).',
  },
  ERR_ISSUER_UNAVAILABLE: {
    status: 503,
    doc: "The identity provider's discovery document or JWKS cannot be fetched; retry later.",
  },
  ERR_NOT_FOUND: { status: 404, doc: 'No such route.' },
  ERR_UNKNOWN_TENANT: { status: 404, doc: 'The tenant does not exist.' },
  ERR_UNKNOWN_KEY_VERSION: { status: 404, doc: 'The tenant has no key of that version.' },
  ERR_UNKNOWN_JOB: { status: 404, doc: 'No job has that id.' },
  ERR_TENANT_EXISTS: { status: 409, doc: 'A tenant with that name already exists.' },
  ERR_CEREMONY_CONFLICT: {
    status: 409,
    doc: 'A node already holds a different key or ceremony under that tenant and version.',
  },
  ERR_UNKNOWN_CEREMONY: {
    status: 404,
    doc: 'A DKG round names a ceremony the node never started.',
  },
  ERR_DKG_FAILED: {
    status: 502,
    doc: 'A distributed key generation failed; `details.culprits` names the nodes at fault when known.',
  },
  ERR_DKG_PACKAGE_SIGNATURE: {
    status: 502,
    doc: "A DKG round-2 package's signature does not verify against the committee signing key of its sender; `details.from` and `details.culprits` name the sender.",
  },
  ERR_DKG_PACKAGE_DECRYPT: {
    status: 502,
    doc: 'A DKG round-2 package, correctly signed, does not decrypt with the recipient identity key; `details.from` and `details.culprits` name the sender.',
  },
  ERR_PROOF_INVALID: {
    status: 502,
    doc: 'A node returned an evaluation whose DLEQ proof does not verify; `details.node` names it.',
  },
  ERR_TOO_FEW_NODES: {
    status: 503,
    doc: 'Fewer than t nodes returned a valid answer within the deadline; `details` says how many were needed and which failed.',
  },
  ERR_OVERLOADED: {
    status: 503,
    doc: 'The service is at its work limit; retry after the Retry-After header. Nothing was evaluated.',
  },
  ERR_RATE_LIMITED: {
    status: 429,
    doc: 'Too many requests for this subject and tenant; retry after the Retry-After header.',
  },
  ERR_NODE_UNAVAILABLE: { status: 503, doc: 'A node is not connected or did not answer in time.' },
  ERR_REGISTRY_UNAVAILABLE: {
    status: 503,
    doc: "The coordinator's registry (Redis) cannot be reached and the nodes did not give it what it needed in time; retry.",
  },
  ERR_UNSUPPORTED_VERSION: {
    status: 400,
    doc: 'A message names a protocol version this side does not speak.',
  },
  ERR_UNKNOWN_MESSAGE: { status: 400, doc: 'A message has a type this side does not know.' },
  ERR_KEY_PACKAGE_INVALID: {
    status: 502,
    doc: 'A key package is inconsistent: verification shares do not match the commitments, or the group key is not the commitment constant term.',
  },
  ERR_KEY_NOT_PINNED: {
    status: 400,
    doc: 'The client has no pinned group key for that tenant and version and was not told to trust on first use.',
  },
  ERR_PINNED_KEY_MISMATCH: {
    status: 502,
    doc: 'The key package served does not carry the group key the client has pinned.',
  },
  ERR_ENVELOPE_FORMAT: { status: 400, doc: 'An encrypted envelope is malformed or truncated.' },
  ERR_DECRYPT_FAILED: {
    status: 400,
    doc: 'An envelope failed authentication: it was tampered with or the key is wrong.',
  },
  ERR_CONFIG: { status: 500, doc: 'A process was started with missing or invalid configuration.' },
  ERR_WRONG_NODE_SECRET: {
    status: 500,
    doc: 'A node was started with a secret that does not open its existing database.',
  },
  ERR_DATA_DIR_LOCKED: {
    status: 500,
    doc: 'A node or identity provider was started on a data folder another live process holds (`kmaas.lock` names its pid); it exits with code 2 and changes nothing.',
  },
  ERR_AUDIT_BROKEN: {
    status: 500,
    doc: 'An audit log failed verification; the first broken entry is named.',
  },
  ERR_LOGIN_FAILED: {
    status: 401,
    doc: 'The identity provider refused the username or password (dev login).',
  },
  ERR_IDP_UNAVAILABLE: {
    status: 503,
    doc: 'The identity provider cannot be reached, or its discovery document does not match the issuer.',
  },
  ERR_IDP_PROTOCOL: {
    status: 502,
    doc: 'The identity provider refused or broke the sign-in flow; `details.error` has the OAuth error code when there is one.',
  },
  ERR_AUDIT_TRUNCATED: {
    status: 500,
    doc: 'An audit log ends before the seq its signed head (`audit.head`) names: entries were cut from its end; `details.firstMissing` is the first missing seq.',
  },
  ERR_AUDIT_HEAD: {
    status: 500,
    doc: "An audit log's signed head does not verify with the node's signing key, is malformed, or names an entry the log does not hold.",
  },
  ERR_PROPOSAL_INVALID: {
    status: 400,
    doc: 'An operator proposal is malformed: a field is missing or wrong for its operation, its committee repeats a node or key, or it expires too far ahead; `details.field` names it.',
  },
  ERR_PROPOSAL_QUORUM: {
    status: 403,
    doc: 'An operator proposal lacks a quorum of valid signatures by distinct operators this node knows; `details` lists the valid, invalid and unknown signers.',
  },
  ERR_PROPOSAL_CLUSTER: {
    status: 403,
    doc: 'An operator proposal names another cluster than the one the node belongs to.',
  },
  ERR_PROPOSAL_EXPIRED: { status: 403, doc: 'An operator proposal is past its expiry.' },
  ERR_PROPOSAL_REPLAYED: {
    status: 409,
    doc: 'An operator proposal was already used (for another ceremony, or applied before); each proposal acts once.',
  },
  ERR_PROPOSAL_MISMATCH: {
    status: 403,
    doc: "A request does not match the proposal it carries: operation, tenant, version, threshold, participants or the round-1 committee (any entry's node, signing or encryption key) differ, or the committee does not hold this node with its own identity keys.",
  },
  ERR_KEY_RETIRED: {
    status: 410,
    doc: 'That key version was retired by an operator proposal: it no longer serves, and the nodes erased their shares.',
  },
  ERR_LAST_KEY_VERSION: {
    status: 409,
    doc: "A retire of a tenant's last live key version without `--last`: it would make every document of the tenant unreadable for good.",
  },
  ERR_RESHARE_DEALER: {
    status: 422,
    doc: 'A resharing dealer sent a dealing that fails its checks (signature, old key package, constant term, or a piece inconsistent with its Feldman commitments); `details.culprits` names the dealers.',
  },
  ERR_RESHARE_KEYSET: {
    status: 409,
    doc: 'A reshare does not list every key the node holds in the old epoch (`details.missing`), or names a key the node cannot deal.',
  },
  ERR_RESHARE_VOTE: {
    status: 422,
    doc: "A reshare commit lacks a valid vote of some new committee member, or the votes are over a transcript other than this node's; `details.nodes` names them.",
  },
  ERR_RESHARE_STATE: {
    status: 409,
    doc: 'A reshare message arrived out of order for the state the reshare is in on that node (for example a prepare before its begin, or a commit before the vote); `details.state` says where it is.',
  },
  ERR_EPOCH_MISMATCH: {
    status: 409,
    doc: 'The node holds no share of that key for the requested epoch (a reshare moved it on); `details.current` is its epoch.',
  },
  ERR_NODE_REMOVED: {
    status: 410,
    doc: 'The node was removed from the committee by a reshare and erased its shares; it serves nothing.',
  },
  ERR_UNKNOWN_DOCUMENT: { status: 404, doc: 'The archive (demo/) has no document with that id.' },
  ERR_NOT_OWNER: {
    status: 403,
    doc: 'Only the user who uploaded a document to the archive (demo/) may delete it.',
  },
  ERR_INTERNAL: { status: 500, doc: 'An unexpected failure; the log has the details.' },
} as const satisfies Record<string, { status: number; doc: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export type ErrorDetails = Record<string, unknown>;

/** The serialised form that crosses HTTP and WebSocket boundaries. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: ErrorDetails;
}

export class KmaasError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, message: string, details?: ErrorDetails) {
    super(message);
    this.name = 'KmaasError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }

  static fromBody(body: ErrorBody): KmaasError {
    const code = isErrorCode(body.code) ? body.code : 'ERR_INTERNAL';
    return new KmaasError(code, body.message, body.details);
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** Anything thrown becomes a KmaasError; unknown failures are hidden behind ERR_INTERNAL. */
export function toKmaasError(err: unknown): KmaasError {
  if (err instanceof KmaasError) return err;
  return new KmaasError('ERR_INTERNAL', 'internal error');
}
