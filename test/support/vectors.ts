import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** One published numeric example from ../shared/vectors/finance-dev.json. */
export interface Vector {
  readonly id: string;
  readonly kind: string;
  readonly source: Record<string, unknown>;
  readonly inputs: Record<string, unknown>;
  readonly expected: Record<string, unknown>;
  readonly tolerance?: Record<string, unknown>;
  /** false when the vector's own authors could not confirm the published figure (see `verification`). */
  readonly verified?: boolean;
  readonly verification?: string;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VECTORS_PATH = path.resolve(repoRoot, '..', 'shared', 'vectors', 'finance-dev.json');

let cache: Vector[] | undefined;

/** Every vector in the file. */
export function allVectors(): Vector[] {
  cache ??= JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as Vector[];
  return cache;
}

/** Every vector of one kind; fails loudly when the file or the kind is missing, so a test cannot pass on nothing. */
export function vectorsOf(kind: string): Vector[] {
  const found = allVectors().filter((v) => v.kind === kind);
  if (found.length === 0) throw new Error(`no vectors of kind ${kind} in ${VECTORS_PATH}`);
  return found;
}

export function vectorById(id: string): Vector {
  const found = allVectors().find((v) => v.id === id);
  if (!found) throw new Error(`no vector ${id} in ${VECTORS_PATH}`);
  return found;
}
