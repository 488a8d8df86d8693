/** Loads the official vectors from ../shared/vectors as they are. */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const VECTORS_DIR =
  process.env.KMAAS_VECTORS_DIR ?? join(here, '..', '..', '..', 'shared', 'vectors');

export function loadVectors<T>(file: string): T {
  return JSON.parse(readFileSync(join(VECTORS_DIR, file), 'utf8')) as T;
}

export interface VoprfVector {
  name: string;
  batchSize: number;
  Input: string[];
  Blind: string[];
  BlindedElement: string[];
  EvaluationElement: string[];
  Proof: string;
  ProofRandomScalar: string;
  Output: string[];
}

export interface VoprfVectorFile {
  skSm: string;
  pkSm: string;
  Seed: string;
  KeyInfo: string;
  vectors: VoprfVector[];
}
