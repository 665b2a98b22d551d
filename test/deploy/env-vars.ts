/**
 * The environment variables Loanbook reads, derived from the code (never a hand-kept list),
 * and the variables deploy/compose/.env.example documents. Shared by the env and compose tests.
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../../src/platform/config.js';

const root = new URL('../../', import.meta.url);
export const read = (path: string): string => readFileSync(new URL(path, root), 'utf8');

/** A production configuration that loads without touching the disk (no generated secrets). */
export const VALID_BASE: Readonly<Record<string, string>> = {
  ENV: 'production',
  SECRET_KEY: 'kL9mQ2xW7vB4nR8tY3uE6iO1pA5sD0fG',
  ENCRYPTION_KEY: Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64'),
  DATABASE_URL: 'postgres://loanbook@127.0.0.1:5432/loanbook',
};

/** Every name loadConfig looks up in the environment it is given (recorded through a Proxy). */
export function configVariables(): Set<string> {
  const names = new Set<string>();
  const env = new Proxy(
    { ...VALID_BASE },
    {
      get(target, key) {
        if (typeof key === 'string' && /^[A-Z][A-Z0-9_]*$/.test(key)) names.add(key);
        return typeof key === 'string' ? target[key] : undefined;
      },
    },
  );
  loadConfig(env);
  return names;
}

/** The keys of the ENVIRONMENT help map in src/cli.ts (what `loanbook --help` documents). */
export function helpVariables(): Set<string> {
  const source = read('src/cli.ts');
  const block = /\nconst ENVIRONMENT[^=]*=\s*\{([\s\S]*?)\n\};/.exec(source)?.[1];
  if (block === undefined) throw new Error('src/cli.ts: the ENVIRONMENT help map was not found');
  return new Set([...block.matchAll(/^\s+([A-Z][A-Z0-9_]*):/gm)].map((m) => m[1] as string));
}

/** Names compose.yaml interpolates (${NAME}, ${NAME:-default}, ${NAME:?message}). */
export function composeInterpolated(): Set<string> {
  return new Set([...read('deploy/compose/compose.yaml').matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1] as string));
}

export interface ExampleEntry {
  readonly name: string;
  readonly value: string;
  /** false for "# NAME=value" (documentation of the default), true for "NAME=value". */
  readonly active: boolean;
  readonly line: number;
  /** The comment lines right above it. */
  readonly description: string;
}

/** The variables .env.example names: "NAME=value" lines and commented "# NAME=value" lines. */
export function exampleEntries(): ExampleEntry[] {
  const lines = read('deploy/compose/.env.example').split('\n');
  const entries: ExampleEntry[] = [];
  // Consecutive variables share the comment above the first (e.g. the two AWS_* credentials).
  let comments: string[] = [];
  let afterEntry = false;
  lines.forEach((text, i) => {
    const m = /^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(text);
    if (m) {
      entries.push({ name: m[2] as string, value: m[3] as string, active: m[1] === undefined, line: i + 1, description: comments.join(' ') });
      afterEntry = true;
      return;
    }
    if (afterEntry || !text.startsWith('#') || text.startsWith('# ----')) comments = [];
    afterEntry = false;
    if (text.startsWith('#') && !text.startsWith('# ----')) comments.push(text.replace(/^#\s?/, ''));
  });
  return entries;
}
