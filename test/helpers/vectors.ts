/** Loads the official vectors from ../shared/vectors as they are. */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const VECTORS_DIR =
  process.env.KMAAS_VECTORS_DIR ?? join(here, '..', '..', '..', 'shared', 'vectors');

export function loadVectors<T>(file: string): T {
  const path = join(VECTORS_DIR, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new Error(
      `official test vector file not found: ${path}. The tests read ../shared/vectors beside the ` +
        'repository (as CI lays it out); set KMAAS_VECTORS_DIR to read them from elsewhere.',
    );
  }
  return JSON.parse(text) as T;
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
