import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/platform/config.js';
import { composeInterpolated, configVariables, exampleEntries, helpVariables, VALID_BASE } from './env-vars.js';

const SECRET_NAME = /(SECRET|PASSWORD|ENCRYPTION_KEY|API_KEY|ACCESS_KEY|DSN|OTLP_HEADERS)/;

describe('deploy/compose/.env.example', () => {
  const entries = exampleEntries();
  const documented = new Set(entries.map((e) => e.name));
  const appReads = new Set([...configVariables(), ...helpVariables()]);

  it('derives a plausible list from the code (the Proxy sees the config schema)', () => {
    // Guards the derivation itself: were loadConfig to stop reading through the object it is
    // given, the list would be empty and every check below would pass vacuously.
    expect(configVariables()).toContain('DATABASE_URL');
    expect(configVariables().size).toBeGreaterThan(40);
  });

  it('documents every variable the configuration schema and `loanbook --help` name', () => {
    const missing = [...appReads].filter((name) => !documented.has(name)).sort();
    expect(missing, `add these to deploy/compose/.env.example with their meaning and default`).toEqual([]);
  });

  it('names no variable that nothing reads (neither the app nor compose.yaml)', () => {
    const interpolated = composeInterpolated();
    const unread = [...documented].filter((name) => !appReads.has(name) && !interpolated.has(name)).sort();
    expect(unread, 'these are in .env.example but neither src/platform/config.ts nor compose.yaml reads them').toEqual([]);
  });

  it('documents every variable compose.yaml interpolates', () => {
    const missing = [...composeInterpolated()].filter((name) => !documented.has(name)).sort();
    expect(missing).toEqual([]);
  });

  it('names each variable once, each with a description above it', () => {
    const seen = entries.map((e) => e.name);
    expect(seen.filter((name, i) => seen.indexOf(name) !== i)).toEqual([]);
    expect(entries.filter((e) => e.description.trim().length < 10).map((e) => `${e.name} (line ${e.line})`)).toEqual([]);
  });

  it('carries no secret value: secrets are empty, with how to generate them', () => {
    const withValues = entries.filter((e) => SECRET_NAME.test(e.name) && e.value !== '').map((e) => `${e.name}=${e.value}`);
    expect(withValues).toEqual([]);
    for (const name of ['SECRET_KEY', 'ENCRYPTION_KEY']) {
      const entry = entries.find((e) => e.name === name);
      expect(entry, name).toMatchObject({ active: true, value: '' });
      expect(entry?.description).toMatch(/openssl rand/);
    }
  });

  it('shows only values the configuration accepts', () => {
    const rejected: string[] = [];
    for (const e of entries) {
      if (e.value === '' || !appReads.has(e.name)) continue;
      try {
        loadConfig({ ...VALID_BASE, [e.name]: e.value });
      } catch (err) {
        rejected.push(`${e.name}=${e.value}: ${(err as Error).message}`);
      }
    }
    expect(rejected).toEqual([]);
  });

  it('a filled-in copy is a valid production configuration', () => {
    const active = Object.fromEntries(entries.filter((e) => e.active && appReads.has(e.name)).map((e) => [e.name, e.value]));
    const filled = { ...active, ENV: 'production', SECRET_KEY: VALID_BASE.SECRET_KEY, ENCRYPTION_KEY: VALID_BASE.ENCRYPTION_KEY, DATABASE_URL: VALID_BASE.DATABASE_URL };
    expect(() => loadConfig(filled)).not.toThrow();
    // Left empty, the secrets stop a production start with a message that says what to do.
    expect(() => loadConfig({ ...active, ENV: 'production' })).toThrow(/SECRET_KEY is required when ENV=production; generate one with: openssl rand/);
  });
});
