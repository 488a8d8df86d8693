/**
 * The browser entry of the KMaaS SDK, bundled by scripts/lib/build-sdk.ts into one ES module
 * (`kmaas-sdk.js`) that a page imports as it is. Everything in it runs on WebCrypto, fetch,
 * IndexedDB and sessionStorage; nothing of Node's.
 *
 * The key-and-lock split this serves: the page signs the user in (browser-login.ts), derives each
 * document's key from the share nodes (KmaasClient) and encrypts or decrypts in the page
 * (encryptStream, decryptStream); the app's server stores only envelopes and never sees a key.
 *
 * @example
 *   import { KmaasClient, MemoryPinStore, beginLogin, completeLogin, currentSession }
 *     from '/build/kmaas-sdk.js';
 *   const login = { issuer, clientId: 'kmaas-dev', redirectUri: location.origin + '/' };
 *   const session = (await completeLogin(login)) ?? (await currentSession(login));
 *   if (!session) await beginLogin(login);
 *   const client = new KmaasClient({ baseUrl, pins: new MemoryPinStore(pins), auth: session });
 *   const sealed = await client.encrypt(file.stream(), { tenant: session.tenant, documentId });
 */
export {
  KmaasClient,
  KmaasError,
  MemoryPinStore,
  encryptStream,
  decryptStream,
  readHeader,
  EnvelopeReader,
  DEFAULT_CHUNK_SIZE,
  generateDpopKey,
  dpopThumbprint,
  type ClientAuth,
  type ClientEvent,
  type DerivedKeys,
  type EnvelopeHeader,
  type EnvelopeStream,
  type ErrorCode,
  type KmaasClientOptions,
  type PinStore,
} from './index.ts';
export { createDpopProof, type DpopProofRequest } from './dpop.ts';
export { envelopeLength } from './envelope.ts';
export {
  beginLogin,
  completeLogin,
  currentSession,
  logout,
  DEFAULT_RESOURCE,
  type BrowserSession,
  type LoginOptions,
} from './browser-login.ts';
export * as protocol from './protocol.ts';
