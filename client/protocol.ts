/**
 * The protocol steps under KmaasClient, for apps and tests that check them on their own: the
 * threshold VOPRF client (RFC 9497 Blind and Finalize, shared/voprf-client.ts), the key package
 * check, the document input and key derivation (shared/document.ts), and the decoding of one
 * node's answer. KmaasClient.deriveKeys does all of this; nothing here talks to the network.
 *
 * @example
 *   const pkg = parseKeyPackage(json);
 *   const state = blind([input]);
 *   // ... the nodes evaluate state.blinded ...
 *   const { outputs } = deriveOutputs(pkg, state, answers.map(decodePartial));
 */
export {
  blind,
  deriveOutputs,
  type BlindState,
  type PartialEvaluation,
} from '../shared/voprf-client.ts';
export { parseKeyPackage, type KeyPackage, type ParsedKeyPackage } from '../shared/key-package.ts';
export { documentInput, documentKeyBytes } from '../shared/document.ts';
export { decodePartial } from './derive.ts';
